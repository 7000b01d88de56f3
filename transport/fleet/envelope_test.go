package fleet

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/kestrel-edge/kestrel/agent/config"
)

func TestSignVerify(t *testing.T) {
	priv, pub := testKey(1)
	kr, err := NewKeyring([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	env, err := SignConfig(priv, Group("met", "north"), 5, []byte("[gps]\nbaud = 9600\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := DecodeConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.VerifyConfig(e, true); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// Every signed field is covered: changing any one breaks the signature.
	for name, mut := range map[string]func(*ConfigEnvelope){
		"version": func(e *ConfigEnvelope) { e.Version++ },
		"scope":   func(e *ConfigEnvelope) { e.Scope = "all" },
		"fleet":   func(e *ConfigEnvelope) { e.Fleet = "other" },
		"issued":  func(e *ConfigEnvelope) { e.Issued++ },
		"body":    func(e *ConfigEnvelope) { e.Body = append(e.Body, '#') },
	} {
		c := *e
		c.Body = append([]byte(nil), e.Body...)
		mut(&c)
		if err := kr.VerifyConfig(&c, true); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	cmd, err := SignCommand(priv, Command{Fleet: "met", Device: "d1", ID: "x", Name: "locate", Args: map[string]string{"a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.VerifyCommand(c, true); err != nil {
		t.Fatal(err)
	}
	c.Args["a"] = "2"
	if err := kr.VerifyCommand(c, true); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed argument: %v", err)
	}
	// An empty argument map is dropped by omitempty and must still verify.
	empty, _ := SignCommand(priv, Command{Fleet: "met", Device: "d1", ID: "y", Name: "flush", Args: map[string]string{}})
	if c, err := DecodeCommand(empty); err != nil || kr.VerifyCommand(c, true) != nil {
		t.Fatalf("empty args: %v", err)
	}
	if got := KeyID(priv.Public().(ed25519.PublicKey)); len(got) != 16 {
		t.Fatalf("key id %q", got)
	}
	// Reply channels stay under the device's own topic tree.
	for _, bad := range []string{"reply/#", "reply/a/b", "state", "../x", "reply/"} {
		if CheckReplyChannel(bad) == nil {
			t.Errorf("reply channel %q accepted", bad)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	priv, _ := testKey(3)
	pemBytes, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{pemBytes, []byte(b64(priv.Seed())), []byte(b64(priv))} {
		got, err := ParsePrivateKey(in)
		if err != nil || !got.Equal(priv) {
			t.Fatalf("ParsePrivateKey(%.20q): %v", in, err)
		}
	}
	if _, err := ParsePrivateKey([]byte("nonsense")); err == nil {
		t.Fatal("nonsense accepted")
	}
}

func b64(b []byte) string { return EncodePublicKey(ed25519.PublicKey(b)) }

func FuzzDecodeConfig(f *testing.F) {
	priv, pub := testKey(1)
	kr, _ := NewKeyring([]string{pub})
	good, _ := SignConfig(priv, AllDevices("met"), 3, []byte("[gps]\nbaud = 9600\n"))
	f.Add(good)
	f.Add([]byte(`{"kestrel":"kestrel-config/1","fleet":"met","target":"group/x","version":1,"issued":0,"body":""}`))
	f.Add([]byte(`{"kestrel":"kestrel-config/1","fleet":"_bad","target":"all","version":1,"body":"AA==","kid":"x","sig":"AA=="}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"kestrel":"kestrel-config/1"} trailing`))
	k2, _ := testKey(2)
	two, _ := SignConfigBy([]ed25519.PrivateKey{priv, k2}, AllDevices("met"), 4, []byte("[gps]\nbaud = 4800\n"))
	f.Add(two)
	f.Add([]byte(`{"kestrel":"kestrel-config/1","fleet":"met","target":"all","version":1,"body":"","cosigs":[{"kid":"x","sig":"AA=="}]}`))
	base := config.Defaults()
	base.Device.ID, base.Device.Fleet = "d", "met"
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeConfig(data)
		if err != nil {
			return
		}
		_ = kr.VerifyConfig(e, false)
		_, _ = kr.VerifyConfigN(e, true, 2)
		_ = e.Signers()
		_ = e.Target().Topic()
		if c, _, err := config.Overlay(base, e.Body); err == nil {
			_ = c.Validate()
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	priv, pub := testKey(1)
	kr, _ := NewKeyring([]string{pub})
	good, _ := SignCommand(priv, Command{Fleet: "met", Device: "d", ID: "r1", Name: "privacy", Args: map[string]string{"mode": "on"}, Reply: "reply/ctl"})
	f.Add(good)
	f.Add([]byte(`{"kestrel":"kestrel-cmd/1","fleet":"met","device":"d","id":"x","name":"locate","issued":1}`))
	f.Add([]byte(`{"kestrel":"kestrel-cmd/1","fleet":"met","device":"d","id":"x","name":"locate","reply":"reply/#"}`))
	f.Add([]byte(`{"id":` + strings.Repeat("[", 1000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			return
		}
		if CheckReplyChannel(c.Reply) != nil {
			t.Fatalf("decoded a command with reply channel %q", c.Reply)
		}
		_ = kr.VerifyCommand(c, false)
	})
}

// testKey makes a deterministic fleet key.
func testKey(seed byte) (ed25519.PrivateKey, string) {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	priv := ed25519.NewKeyFromSeed(s)
	return priv, EncodePublicKey(priv.Public().(ed25519.PublicKey))
}
