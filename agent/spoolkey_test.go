package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpoolKeyFile(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	path := filepath.Join(t.TempDir(), "state", "spool.key")
	if k, err := loadSpoolKey(path, false, log); err != nil || k != nil {
		t.Fatalf("no key, encryption off: %x, %v", k, err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a key was made with encryption off")
	}
	k1, err := loadSpoolKey(path, true, log)
	if err != nil || len(k1) != 32 {
		t.Fatalf("first use: %x, %v", k1, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	k2, err := loadSpoolKey(path, true, log)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load gave another key: %v", err)
	}
	if k3, err := loadSpoolKey(path, false, log); err != nil || !bytes.Equal(k1, k3) {
		t.Fatalf("encryption off keeps reading with the key: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := loadSpoolKey(path, true, log); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode not tightened: %v", st.Mode())
	}
	// Damaged (a power cut during a copy): without encryption it is left
	// alone and unused; with it, set aside and replaced.
	os.WriteFile(path, []byte("-----BEGIN KESTREL SPOOL KEY-----\nAAAA\n"), 0o600)
	if k, err := loadSpoolKey(path, false, log); err != nil || k != nil {
		t.Fatalf("damaged key, encryption off: %x, %v", k, err)
	}
	k4, err := loadSpoolKey(path, true, log)
	if err != nil || len(k4) != 32 || bytes.Equal(k4, k1) {
		t.Fatalf("damaged key not replaced: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	aside := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "spool.key.damaged-") {
			aside++
		}
	}
	if aside != 1 {
		t.Fatalf("damaged key not kept aside: %v", ents)
	}
}
