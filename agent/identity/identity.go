package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// maxKeyFile bounds what Load reads: a PEM PKCS#8 Ed25519 key is 119 bytes.
const maxKeyFile = 4 << 10

// Identity is the device's key pair. Its methods are safe for concurrent use.
type Identity struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	path string
	// Created is true when Load made the key (first boot, or a damaged
	// key replaced): the platform will see a new key.
	Created bool
}

// KeyFile is where the device key lives for cfg: device.key_file, or
// device.key beside remote.state_file when that is empty.
func KeyFile(cfg config.Config) string {
	if cfg.Device.KeyFile != "" {
		return cfg.Device.KeyFile
	}
	return filepath.Join(filepath.Dir(cfg.Remote.StateFile), "device.key")
}

// Load reads the device key at path, making it on first use.
//
// A key file that cannot be parsed (damaged flash, an empty file left by
// a power cut during a copy) is kept beside it as path.damaged-TIME and a
// new key is made: the device must keep working, and the platform flags
// the key change rather than trusting it silently. A key file readable by
// others is tightened to 0600 and logged. Any other read error (a
// permission error, an I/O error) is returned: making a new key then
// would change the identity for a passing fault.
func Load(path string, log *slog.Logger) (*Identity, error) {
	if log == nil {
		log = slog.Default()
	}
	data, err := ReadBounded(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		id, err := create(path)
		if err != nil {
			return nil, err
		}
		log.Info("device key created", "path", path, "key_id", id.ID())
		return id, nil
	case err != nil:
		return nil, fmt.Errorf("device key %s: %w", path, err)
	}
	priv, perr := fleet.ParsePrivateKey(data)
	if perr != nil {
		aside, err := SetAside(path)
		if err != nil {
			return nil, fmt.Errorf("device key %s is unreadable (%v) and cannot be set aside: %w", path, perr, err)
		}
		id, err := create(path)
		if err != nil {
			return nil, err
		}
		log.Error("device key unreadable: set aside and replaced; the platform will flag the new key",
			"path", path, "kept_as", aside, "err", perr, "key_id", id.ID())
		return id, nil
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("device key %s is mode %v and cannot be made 0600: %w", path, st.Mode().Perm(), err)
		}
		log.Warn("device key was readable by others: made 0600", "path", path, "was", st.Mode().Perm().String())
	}
	return &Identity{priv: priv, pub: priv.Public().(ed25519.PublicKey), path: path}, nil
}

// SetAside renames a damaged key file to path.damaged-TIME (UTC) and
// returns the new name: kept for inspection, never read again. The spool
// key (agent) is handled the same way.
func SetAside(path string) (string, error) {
	aside := fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	return aside, os.Rename(path, aside)
}

// ReadBounded reads a key file of at most 4 KiB (a larger one is not a
// key): the device key here, the spool key in the agent.
func ReadBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes: not a key file", maxKeyFile)
	}
	return b, nil
}

func create(path string) (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("device key: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("device key: encode: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := config.WriteAtomic(path, pemBytes, 0o600); err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	return &Identity{priv: priv, pub: pub, path: path, Created: true}, nil
}

// Public is the public key.
func (id *Identity) Public() ed25519.PublicKey { return id.pub }

// PublicString is the public key in base64 (standard, padded), the form
// of the state message's "device_key" and of remote.trusted_keys.
func (id *Identity) PublicString() string { return fleet.EncodePublicKey(id.pub) }

// ID is the key id: hex of the first 8 bytes of SHA-256 of the public key.
func (id *Identity) ID() string { return fleet.KeyID(id.pub) }

// Path is the key file.
func (id *Identity) Path() string { return id.path }

// Sign signs msg with the device key.
func (id *Identity) Sign(msg []byte) []byte { return ed25519.Sign(id.priv, msg) }

// ParsePublic reads a public key in the state message's form.
func ParsePublic(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("device key: %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
