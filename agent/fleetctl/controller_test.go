package fleetctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// memBus is an in-memory message bus with retained messages: a fake with
// behaviour for tests that need no network.
type memBus struct {
	mu       sync.Mutex
	online   bool
	retained map[string][]byte
	subs     map[string]func(string, []byte)
	pubs     []string
}

func newMemBus() *memBus {
	return &memBus{online: true, retained: map[string][]byte{}, subs: map[string]func(string, []byte){}}
}

func (b *memBus) Publish(_ context.Context, ch string, p []byte, retained bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.online {
		return errors.New("offline")
	}
	b.pubs = append(b.pubs, ch+" "+string(p))
	return nil
}

func (b *memBus) Subscribe(topic string, h func(string, []byte)) error {
	b.mu.Lock()
	b.subs[topic] = h
	p, ok := b.retained[topic]
	b.mu.Unlock()
	if ok {
		h(topic, p)
	}
	return nil
}

func (b *memBus) deliver(topic string, p []byte) {
	b.mu.Lock()
	b.retained[topic] = p
	h := b.subs[topic]
	b.mu.Unlock()
	if h != nil {
		h(topic, p)
	}
}

func (b *memBus) connected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.online
}

func TestPendingConfigRolledBackAfterRepeatedRestarts(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	bus := newMemBus()
	bus.online = false // the new config never gets confirmed
	env, _ := fleet.SignConfig(priv, fleet.Device("met", "d1"), 4, []byte("[tracking]\ndistance = 7.0\n"))
	bus.retained["kestrel/v1/met/d1/config/desired"] = env

	m, err := NewManager(Options{Current: cfg, Connected: bus.connected, RollbackAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	m.Attach(newTestDoor(m.StartConfig(), nil), bus)
	deadline := time.Now().Add(5 * time.Second)
	for m.Version() != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if m.Version() != 4 {
		t.Fatal("config not applied")
	}
	// Power cycles before confirmation: the config keeps running for a
	// few boots, then is rolled back in case it is what kills the device.
	for boot := 1; boot <= maxPendingBoots+1; boot++ {
		m, err := NewManager(Options{Current: cfg})
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(4)
		if boot > maxPendingBoots {
			want = 0
		}
		if got := m.StartConfig(); got.Version != want {
			t.Fatalf("boot %d: version %d, want %d", boot, got.Version, want)
		}
		if boot > maxPendingBoots {
			a := m.Audit()
			if last := a[len(a)-1]; last.Kind != "rollback" || last.Version != 4 {
				t.Fatalf("audit: %+v", last)
			}
			if m.st.Anchor.HighWater["device/d1"] != 4 {
				t.Fatal("high-water mark lost: version 4 could be applied again")
			}
		}
	}
}

// TestAuditBoundedAndPersisted: the audit log keeps the last audit_max
// verified entries; 10,000 unverified junk commands are counted in the junk
// summary and push none of them out.
func TestAuditBoundedAndPersisted(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	bus := newMemBus()
	m, err := NewManager(Options{Current: cfg, AuditMax: 5})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	m.Attach(newTestDoor(m.StartConfig(), nil), bus)
	waitAudit := func(ok func([]fleet.AuditEntry) bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !ok(m.Audit()) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := 0; i < 8; i++ {
		c, _ := fleet.SignCommand(priv, fleet.Command{Fleet: "met", Device: "d1", ID: fmt.Sprint("real-", i), Name: "nosuch"})
		bus.deliver("kestrel/v1/met/d1/cmd", c)
	}
	waitAudit(func(a []fleet.AuditEntry) bool { return len(a) == 5 && a[4].Seq == 8 })
	for i := 0; i < 10000; i++ {
		for len(m.inbox) > cap(m.inbox)/2 {
			time.Sleep(time.Millisecond)
		}
		bus.deliver("kestrel/v1/met/d1/cmd", []byte(`{"junk":`+strings.Repeat("1", i%50+1)+`}`))
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.JunkCount() < 10000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	a := m.Audit()
	if len(a) != 5 || a[0].Seq != 4 || a[4].Seq != 8 || a[4].ID != "real-7" || m.JunkCount() != 10000 {
		t.Fatalf("audit %+v, junk %d", a, m.JunkCount())
	}
	// Rejections are saved (rate-limited, and at shutdown).
	raw, err := os.ReadFile(cfg.Remote.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil || len(st.Audit) != 5 || st.AuditSeq != 8 || st.Junk.Count != 10000 {
		t.Fatalf("persisted audit: %d entries, seq %d, junk %d, %v", len(st.Audit), st.AuditSeq, st.Junk.Count, err)
	}
	if fi, _ := os.Stat(cfg.Remote.StateFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode().Perm())
	}
	// A corrupt state file is kept aside and the device starts afresh.
	os.WriteFile(cfg.Remote.StateFile, []byte("{garbage"), 0o600)
	m2, err := NewManager(Options{Current: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if a := m2.Audit(); len(a) != 1 || a[0].Kind != "state" {
		t.Fatalf("corrupt state not audited: %+v", a)
	}
	if aside, _ := filepath.Glob(cfg.Remote.StateFile + ".corrupt-*"); len(aside) != 1 {
		t.Fatal("corrupt state file not kept")
	}
}

func TestReloadKeepsRemoteOverlay(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	bus := newMemBus()
	m, err := NewManager(Options{Current: cfg})
	if err != nil {
		t.Fatal(err)
	}
	door := newTestDoor(m.StartConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); m.Run(ctx) }()
	// Stop the controller before the temp dirs go: it writes its state
	// file (audit entries) until Run returns.
	t.Cleanup(func() { cancel(); <-ran })
	m.Attach(door, bus)
	env, _ := fleet.SignConfig(priv, fleet.AllDevices("met"), 2, []byte("[tracking]\ndistance = 7.0\n"))
	bus.deliver("kestrel/v1/met/_all/config/desired", env)
	deadline := time.Now().Add(5 * time.Second)
	for m.Version() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	local := config.Clone(cfg)
	local.GPS.Baud = 9600
	local.Tracking.Distance = 1000 // under the remote overlay: stays 7
	changed, err := m.ReloadLocal(ctx, local)
	if err != nil {
		t.Fatal(err)
	}
	running, _ := door.applied()
	if running.GPS.Baud != 9600 || running.Tracking.Distance != 7 || running.Version != 2 || len(changed) != 1 {
		t.Fatalf("reload: baud %d distance %v version %d changed %v", running.GPS.Baud, running.Tracking.Distance, running.Version, changed)
	}
	// A key that applies at restart is accepted and said so; the
	// running value stays.
	local.Device.ID = "d2"
	changed, err = m.ReloadLocal(ctx, local)
	if err != nil || len(changed) != 1 || changed[0].Path != "device.id" || changed[0].Applies != config.AtRestart {
		t.Fatalf("restart-key reload: %v %v", changed, err)
	}
	if running, _ := door.applied(); running.Device.ID != "d1" {
		t.Fatalf("device.id changed live to %q", running.Device.ID)
	}
	// A key the agent refuses refuses the whole reload.
	door.mu.Lock()
	door.refuse = map[string]bool{"gps.port": true}
	door.mu.Unlock()
	local.GPS.Port, local.GPS.Baud = "/dev/ttyS9", 4800
	if _, err := m.ReloadLocal(ctx, local); !errors.Is(err, config.ErrRefused) {
		t.Fatalf("refused reload: %v", err)
	}
	if running, _ := door.applied(); running.GPS.Baud != 9600 {
		t.Fatalf("a refused reload changed gps.baud to %d", running.GPS.Baud)
	}
}

// BenchmarkAcceptConfig is the device's cost of one remote config before
// Apply: decode, verify, overlay, validate, diff.
func BenchmarkAcceptConfig(b *testing.B) {
	priv, pub := testKey(1)
	kr, _ := fleet.NewKeyring([]string{pub})
	body := []byte("[tracking]\nmax_interval = \"30s\"\ndistance = 25.0\n[privacy]\ngrid = 500.0\n")
	env, _ := fleet.SignConfig(priv, fleet.AllDevices("met"), 9, body)
	base := config.Defaults()
	base.Device.ID, base.Device.Fleet = "d", "met"
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e, err := fleet.DecodeConfig(env)
		if err != nil {
			b.Fatal(err)
		}
		if err := kr.VerifyConfig(e, true); err != nil {
			b.Fatal(err)
		}
		c, _, err := config.Overlay(base, e.Body)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
		if err := config.CheckReload(base, c); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReportSurvivesRestart: a report made while offline is sent after a
// restart, though the message it is about is not processed again.
func TestReportSurvivesRestart(t *testing.T) {
	_, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	bus := newMemBus()
	bus.online = false
	run := func(check func(*Manager) bool) {
		m, err := NewManager(Options{Current: cfg, Connected: bus.connected})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		m.Attach(newTestDoor(m.StartConfig(), nil), bus)
		deadline := time.Now().Add(5 * time.Second)
		for !check(m) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		if !check(m) {
			t.Fatal("condition not reached")
		}
	}
	bus.retained["kestrel/v1/met/_all/config/desired"] = []byte("not json")
	run(func(m *Manager) bool { return m.JunkCount() == 1 })
	bus.mu.Lock()
	bus.online = true
	bus.mu.Unlock()
	run(func(*Manager) bool {
		bus.mu.Lock()
		defer bus.mu.Unlock()
		for _, p := range bus.pubs {
			if strings.HasPrefix(p, "config/reported ") && strings.Contains(p, `"status":"rejected"`) {
				return true
			}
		}
		return false
	})
}
