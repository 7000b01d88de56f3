package fleetctl

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// signN signs a device config with each key.
func signN(t *testing.T, version uint64, body string, keys ...ed25519.PrivateKey) []byte {
	t.Helper()
	env, err := fleet.SignConfigBy(keys, fleet.Device("met", "d1"), version, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestConfigThreshold: with remote.config_threshold = 2 of three trusted
// config keys, one signature is refused, the same key's signature twice
// counts once, a commands-only key does not count, and two distinct
// config keys apply. A config that would raise the threshold past the
// keys it leaves is refused.
func TestConfigThreshold(t *testing.T) {
	k1, pub1 := testKey(1)
	k2, pub2 := testKey(2)
	_, pub3 := testKey(3)
	k4, pub4 := testKey(4)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", "config:"+pub1, "config:"+pub2, "config:"+pub3, "commands:"+pub4)
	cfg.Remote.ConfigThreshold = 2
	d := startMemDevice(t, cfg, newMemBus())

	if st, msg := d.push(t, signN(t, 1, "[tracking]\ndistance = 7.0\n", k1)); st != fleet.StatusRejected || !strings.Contains(msg, "1 of 2 required") {
		t.Fatalf("one signature of two: %s %q", st, msg)
	}
	// The same key twice: the cosig is k1's own signature again.
	var e fleet.ConfigEnvelope
	if err := json.Unmarshal(signN(t, 2, "[tracking]\ndistance = 8.0\n", k1), &e); err != nil {
		t.Fatal(err)
	}
	e.Cosigs = []fleet.Signature{{KeyID: e.KeyID, Sig: e.Sig}}
	twice, _ := json.Marshal(&e)
	if st, msg := d.push(t, twice); st != fleet.StatusRejected || !strings.Contains(msg, "1 of 2 required") {
		t.Fatalf("the same key twice: %s %q", st, msg)
	}
	if st, msg := d.push(t, signN(t, 3, "[tracking]\ndistance = 9.0\n", k1, k4)); st != fleet.StatusRejected || !strings.Contains(msg, "1 of 2 required") {
		t.Fatalf("a config key and a commands key: %s %q", st, msg)
	}
	if st, msg := d.push(t, signN(t, 4, "[tracking]\ndistance = 10.0\n", k1, k2)); st != fleet.StatusApplied {
		t.Fatalf("two distinct config keys: %s %q", st, msg)
	}
	if got := d.m.current().Tracking.Distance; got != 10 {
		t.Fatalf("running distance %v", got)
	}
	audit := d.m.Audit()
	last := audit[len(audit)-1]
	if last.Result != fleet.StatusApplied || strings.Join(last.Signers, ",") != fleet.KeyID(k1.Public().(ed25519.PublicKey))+","+fleet.KeyID(k2.Public().(ed25519.PublicKey)) {
		t.Fatalf("audit entry %+v", last)
	}
	// A tampered cosignature refuses the whole envelope.
	if err := json.Unmarshal(signN(t, 5, "[tracking]\ndistance = 11.0\n", k1, k2), &e); err != nil {
		t.Fatal(err)
	}
	e.Cosigs[0].Sig[0] ^= 1
	bad, _ := json.Marshal(&e)
	if st, msg := d.push(t, bad); st != fleet.StatusRejected || !strings.Contains(msg, fleet.ErrBadSignature.Error()) {
		t.Fatalf("tampered cosignature: %s %q", st, msg)
	}
	// Raising the threshold beyond the config keys would lock the fleet out.
	if st, msg := d.push(t, signN(t, 6, "[remote]\nconfig_threshold = 4\n", k1, k2)); st != fleet.StatusRejected || !strings.Contains(msg, "only 3 trusted key(s) have the config role") {
		t.Fatalf("unreachable threshold: %s %q", st, msg)
	}
}

// TestCommandThreshold: remote.command_threshold = 2 refuses a command
// signed once and runs one signed by two distinct commands keys.
func TestCommandThreshold(t *testing.T) {
	k1, pub1 := testKey(1)
	k2, pub2 := testKey(2)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub1, pub2)
	cfg.Remote.CommandThreshold = 2
	kr, _ := fleet.NewKeyring(cfg.Remote.TrustedKeys)
	for _, tc := range []struct {
		keys []ed25519.PrivateKey
		ok   bool
	}{{[]ed25519.PrivateKey{k1}, false}, {[]ed25519.PrivateKey{k1, k2}, true}} {
		b, err := fleet.SignCommandBy(tc.keys, fleet.Command{Fleet: "met", Device: "d1", ID: "x", Name: "status"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := fleet.DecodeCommand(b)
		if err != nil {
			t.Fatal(err)
		}
		signers, err := kr.VerifyCommandN(c, true, cfg.Remote.CommandThreshold)
		if (err == nil) != tc.ok || (tc.ok && len(signers) != 2) {
			t.Errorf("%d key(s): signers %v, %v", len(tc.keys), signers, err)
		}
	}
	if _, err := fleet.SignCommandBy([]ed25519.PrivateKey{k1, k1}, fleet.Command{Fleet: "met", Device: "d1", ID: "y", Name: "status"}); err == nil {
		t.Error("signing with the same key twice accepted")
	}
}
