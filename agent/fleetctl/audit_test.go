package fleetctl

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// testSigner is a device key (agent/identity's, without the file).
type testSigner struct{ priv ed25519.PrivateKey }

func (s testSigner) ID() string             { return fleet.KeyID(s.priv.Public().(ed25519.PublicKey)) }
func (s testSigner) Sign(msg []byte) []byte { return ed25519.Sign(s.priv, msg) }
func (s testSigner) announced() string {
	return base64.StdEncoding.EncodeToString(s.priv.Public().(ed25519.PublicKey))
}

func newTestSigner(seed byte) testSigner {
	priv, _ := testKey(seed)
	return testSigner{priv}
}

// published returns the audit entries the bus carried, decoded, in order
// (the junk summary, outside the chain, left out).
func (b *memBus) audits(t *testing.T) []*fleet.AuditEntry {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*fleet.AuditEntry
	for _, p := range b.pubs {
		payload, ok := strings.CutPrefix(p, fleet.ChannelAudit+" ")
		if !ok {
			continue
		}
		e, err := fleet.DecodeAudit([]byte(payload))
		if err != nil {
			t.Fatalf("audit payload %s: %v", payload, err)
		}
		// Entries sent again after a restart (before their ack was
		// saved) are duplicates, as the platform takes them.
		if e.Seq > 0 && !slices.ContainsFunc(out, func(o *fleet.AuditEntry) bool { return o.Seq == e.Seq && o.Digest == e.Digest }) {
			out = append(out, e)
		}
	}
	return out
}

type auditRig struct {
	t      *testing.T
	m      *Manager
	bus    *memBus
	door   *testDoor
	cancel context.CancelFunc
	done   chan struct{}
}

func startAuditRig(t *testing.T, cfg config.Config, bus *memBus, signer testSigner) *auditRig {
	t.Helper()
	m, err := NewManager(Options{Current: cfg, Signer: signer, Connected: bus.connected, CheckEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	door := newTestDoor(m.StartConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	r := &auditRig{t: t, m: m, bus: bus, door: door, cancel: cancel, done: make(chan struct{})}
	go func() { m.Run(ctx); close(r.done) }()
	if err := m.Attach(door, bus); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *auditRig) stop() {
	r.cancel()
	<-r.done
}

// waitAudits waits until n chained entries are published.
func (r *auditRig) waitAudits(n int) []*fleet.AuditEntry {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.bus.audits(r.t)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d audit entries published, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The audit chain through the manager: a config push (key by key, with
// old and new values), a command (its arguments, secrets redacted), a
// privacy change and a local reload are chained, sealed and signed; the
// chain goes on across a restart from the persisted head.
func TestAuditChainAcrossRestart(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	signer := newTestSigner(9)
	bus := newMemBus()
	r := startAuditRig(t, cfg, bus, signer)

	env, _ := fleet.SignConfig(priv, fleet.Device("met", "d1"), 2, []byte("[tracking]\ndistance = 7.0\n"))
	bus.deliver("kestrel/v1/met/d1/config/desired", env)
	r.m.opts.Commands = map[string]CommandFunc{"wipe": func(context.Context, map[string]string) (any, error) { return nil, nil }}
	cmd, _ := fleet.SignCommand(priv, fleet.Command{Fleet: "met", Device: "d1", ID: "c1", Name: "wipe",
		Args: map[string]string{"what": "spool", "pin": "1234"}})
	r.waitAudits(1)
	bus.deliver("kestrel/v1/met/d1/cmd", cmd)
	r.waitAudits(2)
	r.m.AuditPrivacy(PrivacyChange{Mode: "pause", Was: "off", Cause: "schedule"})
	local := config.Clone(cfg)
	local.GPS.Baud = 9600
	if _, err := r.m.ReloadLocal(context.Background(), local); err != nil {
		t.Fatal(err)
	}
	got := r.waitAudits(4)
	r.stop()

	// The device restarts: seq and head go on from the state file. (A
	// command is not retained on a real broker.)
	delete(bus.retained, "kestrel/v1/met/d1/cmd")
	r2 := startAuditRig(t, cfg, bus, signer)
	r2.m.AuditPrivacy(PrivacyChange{Mode: "off", Was: "pause", Cause: "schedule"})
	got = r2.waitAudits(5)

	if p := fleet.CheckAuditChain(fleet.ChainCheck{Fleet: "met", Device: "d1", DeviceKey: signer.announced(), FromStart: true}, got); p != nil {
		t.Fatalf("chain problems: %v", p)
	}
	kid := fleet.KeyID(priv.Public().(ed25519.PublicKey))
	want := []struct {
		kind, result string
		by           string
	}{{"config", fleet.StatusApplied, kid}, {"command", fleet.ReplyOK, kid}, {"privacy", "pause", fleet.ByDevice}, {"reload", fleet.StatusApplied, fleet.ByLocal}, {"privacy", "off", fleet.ByDevice}}
	for i, w := range want {
		e := got[i]
		if e.Seq != uint64(i+1) || e.Kind != w.kind || e.Result != w.result || !slices.Equal(e.By, []string{w.by}) {
			t.Errorf("entry %d: seq %d kind %q result %q by %v, want %d %q %q [%s]", i, e.Seq, e.Kind, e.Result, e.By, i+1, w.kind, w.result, w.by)
		}
	}
	if d := got[0].Diff; len(d) != 1 || d[0] != (fleet.AuditDiff{Path: "tracking.distance", Old: "50", New: "7"}) {
		t.Errorf("config diff %+v", d)
	}
	if a := got[1].Args; a["what"] != "spool" || a["pin"] != fleet.Redacted {
		t.Errorf("command args %v: the pin must be redacted", a)
	}
	if d := got[3].Diff; len(d) != 1 || d[0].Path != "gps.baud" || d[0].New != "9600" {
		t.Errorf("reload diff %+v", d)
	}
	if seq, head := r2.m.AuditHead(); seq != 5 || head != got[4].Digest {
		t.Errorf("head %d %s, want 5 %s", seq, head, got[4].Digest)
	}
}

// Entries made while the broker is away are sent from the state file,
// after a restart too, in seq order; the local tail is bounded and still
// verifies as a chain ending at the head.
func TestAuditOfflineTailAndTrim(t *testing.T) {
	_, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	cfg.Remote.AuditMax = 4
	signer := newTestSigner(9)
	bus := newMemBus()
	bus.online = false
	r := startAuditRig(t, cfg, bus, signer)
	for _, mode := range []string{"pause", "off", "coarse"} {
		r.m.AuditPrivacy(PrivacyChange{Mode: mode, Cause: "zone"})
	}
	r.stop()
	bus.mu.Lock()
	bus.online = true
	bus.mu.Unlock()
	r2 := startAuditRig(t, cfg, bus, signer)
	got := r2.waitAudits(3)
	if p := fleet.CheckAuditChain(fleet.ChainCheck{Fleet: "met", Device: "d1", DeviceKey: signer.announced(), FromStart: true}, got); p != nil {
		t.Fatalf("chain problems after the restart: %v", p)
	}
	// Offline for longer than the tail holds: the entries trimmed before
	// they were sent never arrive, and the chain names them.
	bus.mu.Lock()
	bus.online = false
	bus.mu.Unlock()
	for range 6 {
		r2.m.AuditPrivacy(PrivacyChange{Mode: "pause", Cause: "gpio"})
	}
	bus.mu.Lock()
	bus.online = true
	bus.mu.Unlock()
	got = r2.waitAudits(7)
	p := fleet.CheckAuditChain(fleet.ChainCheck{Fleet: "met", Device: "d1", DeviceKey: signer.announced(), FromStart: true}, got)
	if len(p) != 1 || p[0].Problem != fleet.ProblemMissing || p[0].FirstSeq != 4 || p[0].LastSeq != 5 {
		t.Fatalf("chain problems %v, want seq 4-5 missing", p)
	}
	tail := r2.m.Audit()
	if len(tail) != 4 || tail[0].Seq != 6 {
		t.Fatalf("tail %d entries from seq %d, want 4 from 6", len(tail), tail[0].Seq)
	}
	ptrs := make([]*fleet.AuditEntry, len(tail))
	for i := range tail {
		ptrs[i] = &tail[i]
	}
	if p := fleet.CheckAuditChain(fleet.ChainCheck{Fleet: "met", Device: "d1", SkipSignatures: true}, ptrs); p != nil {
		t.Fatalf("trimmed tail: %v", p)
	}
	if _, head := r2.m.AuditHead(); head != tail[3].Digest || tail[0].Digest != got[3].Digest {
		t.Fatalf("the tail does not join the published chain or end at the head")
	}
}

// A rollback is the device's own doing, and its entry says what it put
// back, key by key.
func TestAuditRollbackDiff(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	bus := newMemBus()
	bus.online = false // the change is never confirmed
	m, err := NewManager(Options{Current: cfg, Signer: newTestSigner(9), Connected: bus.connected, CheckEvery: 20 * time.Millisecond, RollbackAfter: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	door := newTestDoor(m.StartConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	m.Attach(door, bus)
	env, _ := fleet.SignConfig(priv, fleet.Device("met", "d1"), 2, []byte("[tracking]\ndistance = 7.0\n"))
	bus.deliver("kestrel/v1/met/d1/config/desired", env)
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := m.Audit()
		if len(a) >= 2 {
			r := a[1]
			if r.Kind != "rollback" || !slices.Equal(r.By, []string{fleet.ByDevice}) || len(r.Diff) != 1 ||
				r.Diff[0] != (fleet.AuditDiff{Path: "tracking.distance", Old: "7", New: "50"}) || r.Prev != a[0].Digest {
				t.Fatalf("rollback entry %+v", r)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rollback entry: %+v", a)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
