package fleetctl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// memDevice is a Manager on a memBus with a test door, running until the
// test stops it.
type memDevice struct {
	m      *Manager
	bus    *memBus
	cancel context.CancelFunc
	done   chan error
}

func startMemDevice(t *testing.T, cfg config.Config, bus *memBus) *memDevice {
	t.Helper()
	m, err := NewManager(Options{Current: cfg, Connected: bus.connected, RollbackAfter: time.Hour, CheckEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &memDevice{m: m, bus: bus, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- m.Run(ctx) }()
	if err := m.Attach(newTestDoor(m.StartConfig(), nil), bus); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

func (d *memDevice) stop() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
		d.cancel = nil
	}
}

// push delivers a signed envelope on the device topic and waits for the
// report about its version; it returns the report's status and errors.
func (d *memDevice) push(t *testing.T, env []byte) (string, string) {
	t.Helper()
	e, err := fleet.DecodeConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	d.bus.mu.Lock()
	seen := len(d.bus.pubs)
	d.bus.mu.Unlock()
	d.bus.deliver("kestrel/v1/met/d1/config/desired", env)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.bus.mu.Lock()
		pubs := d.bus.pubs[seen:]
		d.bus.mu.Unlock()
		for _, p := range pubs {
			body, ok := strings.CutPrefix(p, "config/reported ")
			if !ok {
				continue
			}
			r, err := fleet.DecodeReport([]byte(body))
			if err == nil && r.Version == e.Version {
				var msgs []string
				for _, e := range r.Errors {
					msgs = append(msgs, e.Error)
				}
				return r.Status, strings.Join(msgs, "; ")
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no report for version %d", e.Version)
	return "", ""
}

func mustSign(t *testing.T, priv []byte, version uint64, body string) []byte {
	t.Helper()
	env, err := fleet.SignConfig(priv, fleet.Device("met", "d1"), version, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestVersionStepBounded: a signed version 2^64−1 is refused, and a
// later ordinary version (Unix seconds) still applies.
func TestVersionStepBounded(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	d := startMemDevice(t, cfg, newMemBus())
	if st, msg := d.push(t, mustSign(t, priv, math.MaxUint64, "[tracking]\ndistance = 7.0\n")); st != fleet.StatusRejected || !strings.Contains(msg, ErrVersionJump.Error()) {
		t.Fatalf("version 2^64-1: %s %q", st, msg)
	}
	now := uint64(time.Now().Unix())
	if st, msg := d.push(t, mustSign(t, priv, now, "[tracking]\ndistance = 8.0\n")); st != fleet.StatusApplied {
		t.Fatalf("version %d after the refused one: %s %q", now, st, msg)
	}
	// Even a trusted key that jumps as far as allowed leaves room above.
	top := now + MaxVersionStep
	if st, _ := d.push(t, mustSign(t, priv, top, "[tracking]\ndistance = 9.0\n")); st != fleet.StatusApplied {
		t.Fatal("a full step refused")
	}
	if st, _ := d.push(t, mustSign(t, priv, top+MaxVersionStep+1, "[tracking]\ndistance = 10.0\n")); st != fleet.StatusRejected {
		t.Fatal("more than a step accepted")
	}
	if st, _ := d.push(t, mustSign(t, priv, top+1, "[tracking]\ndistance = 11.0\n")); st != fleet.StatusApplied {
		t.Fatal("the next version after a full step refused")
	}
	if err := checkVersion("all", math.MaxUint64, 0); !errors.Is(err, ErrVersionJump) {
		t.Fatal(err)
	}
}

// TestAntiRollbackSurvivesFileLoss: the high-water marks and the revoked
// keys are kept in the state file and in two anchor files; deleting or
// corrupting any one of them neither lets an old signed config be
// replayed nor re-trusts a revoked key.
func TestAntiRollbackSurvivesFileLoss(t *testing.T) {
	k1, pub1 := testKey(1)
	k2, pub2 := testKey(2)
	for _, file := range []string{"state", "anchor.a", "anchor.b"} {
		for _, damage := range []string{"delete", "corrupt"} {
			t.Run(file+"/"+damage, func(t *testing.T) {
				cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub1)
				bus := newMemBus()
				d := startMemDevice(t, cfg, bus)
				// Version 1 (by key 1) adds key 2; version 2 (by key 2)
				// is an ordinary change; version 3 (by key 2) revokes
				// key 1.
				steps := []struct {
					priv []byte
					body string
				}{
					{k1, fmt.Sprintf("[remote]\ntrusted_keys = [%q, %q]\n[tracking]\ndistance = 10.0\n", pub1, pub2)},
					{k2, fmt.Sprintf("[remote]\ntrusted_keys = [%q, %q]\n[tracking]\ndistance = 15.0\n", pub1, pub2)},
					{k2, fmt.Sprintf("[remote]\ntrusted_keys = [%q]\n[tracking]\ndistance = 20.0\n", pub2)},
				}
				var envs [][]byte
				for i, s := range steps {
					env := mustSign(t, s.priv, uint64(i+1), s.body)
					envs = append(envs, env)
					if st, msg := d.push(t, env); st != fleet.StatusApplied {
						t.Fatalf("version %d: %s %q", i+1, st, msg)
					}
				}
				if st, _ := d.push(t, mustSign(t, k1, 4, "[tracking]\ndistance = 1.0\n")); st != fleet.StatusRejected {
					t.Fatal("revoked key accepted before any damage")
				}
				d.stop()
				// The fleet's retained desired config is version 3 again.
				bus.retained["kestrel/v1/met/d1/config/desired"] = envs[2]

				path := map[string]string{"state": cfg.Remote.StateFile,
					"anchor.a": cfg.Remote.StateFile + ".anchor.a", "anchor.b": cfg.Remote.StateFile + ".anchor.b"}[file]
				if damage == "delete" {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				} else {
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					b[len(b)/2] ^= 0x55
					if err := os.WriteFile(path, b, 0o600); err != nil {
						t.Fatal(err)
					}
				}

				// Restart with the same local file (which trusts key 1).
				d = startMemDevice(t, cfg, bus)
				// The retained version 3 (still on the broker) is in force
				// again, whichever file was lost.
				deadline := time.Now().Add(5 * time.Second)
				for d.m.Version() != 3 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if v := d.m.Version(); v != 3 {
					t.Fatalf("after the restart running version %d, want 3", v)
				}
				if st, msg := d.push(t, envs[1]); st != fleet.StatusRejected {
					t.Fatalf("old version 2 (by key 2) replayed: %s %q", st, msg)
				}
				if st, msg := d.push(t, envs[0]); st != fleet.StatusRejected {
					t.Fatalf("old version 1 (by key 1) replayed: %s %q", st, msg)
				}
				if st, msg := d.push(t, mustSign(t, k1, 5, "[tracking]\ndistance = 1.0\n")); st != fleet.StatusRejected || !strings.Contains(msg, "not in remote.trusted_keys") {
					t.Fatalf("revoked key 1 trusted again: %s %q", st, msg)
				}
				if st, msg := d.push(t, mustSign(t, k2, 6, fmt.Sprintf("[remote]\ntrusted_keys = [%q]\n[tracking]\ndistance = 30.0\n", pub2))); st != fleet.StatusApplied {
					t.Fatalf("key 2 no longer configures the device: %s %q", st, msg)
				}
			})
		}
	}
}

// TestKeyRoles: a key trusted for commands only cannot sign a config, and
// one trusted for config only cannot sign a command; a bare key has every
// role.
func TestKeyRoles(t *testing.T) {
	k1, pub1 := testKey(1)
	k2, pub2 := testKey(2)
	k3, pub3 := testKey(3)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub1, "commands:"+pub2, "config:"+pub3)
	d := startMemDevice(t, cfg, newMemBus())
	if st, msg := d.push(t, mustSign(t, k2, 1, "[tracking]\ndistance = 7.0\n")); st != fleet.StatusRejected || !strings.Contains(msg, fleet.ErrWrongRole.Error()) {
		t.Fatalf("config by a commands key: %s %q", st, msg)
	}
	if st, msg := d.push(t, mustSign(t, k3, 2, "[tracking]\ndistance = 8.0\n")); st != fleet.StatusApplied {
		t.Fatalf("config by a config key: %s %q", st, msg)
	}
	if st, msg := d.push(t, mustSign(t, k1, 3, "[tracking]\ndistance = 9.0\n")); st != fleet.StatusApplied {
		t.Fatalf("config by a bare key: %s %q", st, msg)
	}
	kr, err := fleet.NewKeyring(cfg.Remote.TrustedKeys)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		priv []byte
		ok   bool
	}{{k1, true}, {k2, true}, {k3, false}} {
		b, _ := fleet.SignCommand(c.priv, fleet.Command{Fleet: "met", Device: "d1", ID: "x", Name: "status"})
		cmd, err := fleet.DecodeCommand(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := kr.VerifyCommand(cmd, true); (err == nil) != c.ok || (err != nil && !errors.Is(err, fleet.ErrWrongRole)) {
			t.Fatalf("command by key %s: %v", cmd.KeyID, err)
		}
	}
	bad := cfg
	bad.Remote.TrustedKeys = []string{"root:" + pub1}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "unknown key role") {
		t.Fatalf("unknown role: %v", err)
	}
}
