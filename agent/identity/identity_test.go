package identity

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFirstBootMakesAKeyThatSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "device.key")
	a, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Created {
		t.Error("first load did not report a new key")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	b, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Created || !bytes.Equal(a.Public(), b.Public()) {
		t.Fatalf("second load changed the key (created=%v)", b.Created)
	}
	msg := []byte("reply")
	if !ed25519.Verify(b.Public(), msg, a.Sign(msg)) {
		t.Error("a signature by the first load does not verify with the second")
	}
	pub, err := ParsePublic(a.PublicString())
	if err != nil || !bytes.Equal(pub, a.Public()) {
		t.Errorf("ParsePublic(PublicString) = %v, %v", pub, err)
	}
	if len(a.ID()) != 16 {
		t.Errorf("key id %q, want 16 hex digits", a.ID())
	}
}

func TestDamagedKeyIsSetAsideAndReplaced(t *testing.T) {
	for name, content := range map[string][]byte{
		"empty":     {},
		"garbage":   []byte("\x00\xff not a key"),
		"truncated": []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2Vw\n-----END PRIVATE KEY-----\n"),
		"rsa-type":  []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "device.key")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			id, err := Load(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !id.Created {
				t.Error("a replaced key is not reported as new")
			}
			ents, _ := os.ReadDir(dir)
			var kept bool
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "device.key.damaged-") {
					got, _ := os.ReadFile(filepath.Join(dir, e.Name()))
					kept = bytes.Equal(got, content)
				}
			}
			if !kept {
				t.Error("the damaged key was not kept beside the new one")
			}
		})
	}
}

func TestOversizedKeyFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); err == nil {
		t.Fatal("a 1 MiB key file was accepted")
	}
}

func TestLooseModeIsTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	if _, err := Load(path, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after load, want 0600", st.Mode().Perm())
	}
}

func TestUnreadableKeyIsAnErrorNotANewIdentity(t *testing.T) {
	// A read error other than "missing" (here EISDIR; on a device an I/O
	// error) must not make a new identity for a passing fault.
	path := filepath.Join(t.TempDir(), "device.key")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); err == nil {
		t.Fatal("an unreadable key file made a new identity")
	}
}
