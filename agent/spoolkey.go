package agent

import (
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/identity"
	"github.com/kestrel-edge/kestrel/agent/spool"
)

// The spool key (spool.encrypt; docs/spool.md "Encryption at rest"): 32
// random bytes in a PEM block, 0600, beside the device key unless
// spool.key_file names it, made at first use and handled as the device
// key is (agent/identity): a damaged file is set aside and replaced.

const spoolKeyPEM = "KESTREL SPOOL KEY"

// SpoolKeyFile is where the spool key lives for cfg.
func SpoolKeyFile(cfg config.Config) string {
	if cfg.Spool.KeyFile != "" {
		return cfg.Spool.KeyFile
	}
	return filepath.Join(filepath.Dir(identity.KeyFile(cfg)), "spool.key")
}

// loadSpoolKey reads the spool key at path. With create it makes one when
// there is none, or when the file is damaged (set aside as
// path.damaged-TIME: the records sealed with it are then counted lost at
// Open, which beats a device that stops recording). Without create a
// missing or damaged key is nil: the spool writes plaintext and counts
// any sealed record lost. Other read errors are returned: a passing fault
// must not replace the key.
func loadSpoolKey(path string, create bool, log *slog.Logger) ([]byte, error) {
	data, err := identity.ReadBounded(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !create {
			return nil, nil
		}
		key, err := makeSpoolKey(path)
		if err == nil {
			log.Info("spool key created", "path", path)
		}
		return key, err
	case err != nil:
		return nil, fmt.Errorf("spool key %s: %w", path, err)
	}
	key, perr := parseSpoolKey(data)
	if perr != nil {
		if !create {
			log.Error("spool key unreadable; sealed records cannot be read", "path", path, "err", perr)
			return nil, nil
		}
		aside, err := identity.SetAside(path)
		if err != nil {
			return nil, fmt.Errorf("spool key %s is unreadable (%v) and cannot be set aside: %w", path, perr, err)
		}
		key, err := makeSpoolKey(path)
		if err != nil {
			return nil, err
		}
		log.Error("spool key unreadable: set aside and replaced; records sealed with it are counted lost",
			"path", path, "kept_as", aside, "err", perr)
		return key, nil
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("spool key %s is mode %v and cannot be made 0600: %w", path, st.Mode().Perm(), err)
		}
		log.Warn("spool key was readable by others: made 0600", "path", path, "was", st.Mode().Perm().String())
	}
	return key, nil
}

func parseSpoolKey(data []byte) ([]byte, error) {
	b, _ := pem.Decode(data)
	switch {
	case b == nil:
		return nil, errors.New("no PEM block")
	case b.Type != spoolKeyPEM:
		return nil, fmt.Errorf("PEM block %q, want %q", b.Type, spoolKeyPEM)
	case len(b.Bytes) != spool.KeyBytes:
		return nil, fmt.Errorf("key of %d bytes, want %d", len(b.Bytes), spool.KeyBytes)
	}
	return b.Bytes, nil
}

func makeSpoolKey(path string) ([]byte, error) {
	key := make([]byte, spool.KeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("spool key: generate: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("spool key: %w", err)
	}
	if err := config.WriteAtomic(path, pem.EncodeToMemory(&pem.Block{Type: spoolKeyPEM, Bytes: key}), 0o600); err != nil {
		return nil, fmt.Errorf("spool key: %w", err)
	}
	return key, nil
}
