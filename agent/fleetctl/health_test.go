package fleetctl

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// realAgent runs the real agent with this package's Manager as its fleet
// controller, wired as kestrel run wires them.
func realAgent(t *testing.T, c config.Config) (*agent.Agent, *Manager) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	ctl, err := NewManager(Options{Current: c, Logger: log, CheckEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(ctl.StartConfig(), agent.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetHandlers(nil, a.Policy())
	if err := ctl.Attach(a, a.Messenger()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { ctl.Run(ctx); done <- struct{}{} }()
	go func() { a.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done; a.Close() })
	return a, ctl
}

func waitGood(t *testing.T, m *Manager, scope string, version uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		g := m.st.GoodLayers[scope]
		ok := g != nil && g.Version == version && m.st.Pending == nil
		m.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("version %d never confirmed", version)
}

// TestWrongBrokerRolledBack: with the real agent and three real brokers,
// a change of broker.urls to a reachable broker that does not serve the
// fleet-signed desired config is rolled back (the connection alone proves
// nothing), and a change to a broker that serves it is confirmed.
func TestWrongBrokerRolledBack(t *testing.T) {
	home, wrong, other := broker.StartMochi(t), broker.StartMochi(t), broker.StartMochi(t)
	priv, pub := testKey(1)
	dir := t.TempDir()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = "bwc-0001", "met"
	c.Broker.URLs = []string{home.URL()}
	c.Broker.BatchAge = config.D(100 * time.Millisecond)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.TrustedKeys = []string{pub}
	c.Remote.RollbackAfter = config.D(3 * time.Second) // the good config's grace
	c.Hooks.Socket = ""
	a, m := realAgent(t, c)
	obs := home.Observe("kestrel/v1/met/bwc-0001/config/reported")
	p := newPlatform(t, home.URL())
	me := fleet.Device("met", "bwc-0001")

	p.pushConfig(priv, me, 1, "[tracking]\ndistance = 20.0\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 1 && r.Status == fleet.StatusApplied })
	waitGood(t, m, "device/bwc-0001", 1)

	// Version 2 moves the device to a broker that accepts it but has
	// never heard of the fleet. It also asks for a long probation, which
	// it does not get: the grace is the good config's 3 s.
	p.pushConfig(priv, me, 2, fmt.Sprintf("[broker]\nurls = [%q]\n[remote]\nrollback_after = \"1000h\"\n", wrong.URL()))
	r := waitReport(t, obs, "bwc-0001", 30*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusRolledBack })
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "did not serve the fleet-signed desired config") || r.Running != 1 {
		t.Fatalf("rollback report: %+v", r)
	}
	if got := a.Config().Broker.URLs; !slices.Equal(got, []string{home.URL()}) {
		t.Fatalf("after rollback the agent uses %v", got)
	}

	// Version 3 moves it to a broker of the fleet: it serves the signed
	// desired config (the fleet publishes it there too), so it is kept.
	body := fmt.Sprintf("[broker]\nurls = [%q]\n", other.URL())
	env := p.pushConfig(priv, me, 3, body)
	newPlatform(t, other.URL()).publish(me.Topic(), env, true)
	waitGood(t, m, "device/bwc-0001", 3)
	time.Sleep(4 * time.Second) // past the grace: still there
	if got := a.Config().Broker.URLs; !slices.Equal(got, []string{other.URL()}) {
		t.Fatalf("the fleet's other broker was not kept: %v", got)
	}
}

// TestProbationBoundedByGoodConfig: a config that asks for a long
// probation and is never confirmed does not get it, not even across a
// restart: the grace is the last good config's.
func TestProbationBoundedByGoodConfig(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	cfg.Remote.RollbackAfter = config.D(time.Second)
	bus := newMemBus()
	bus.online = false // never confirmed
	bus.retained["kestrel/v1/met/d1/config/desired"] = mustSign(t, priv, 5, "[remote]\nrollback_after = \"1000h\"\n[tracking]\ndistance = 7.0\n")
	run := func(until func(*Manager) bool) *Manager {
		m, err := NewManager(Options{Current: cfg, Connected: bus.connected, CheckEvery: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		m.Attach(newTestDoor(m.StartConfig(), nil), bus)
		deadline := time.Now().Add(10 * time.Second)
		for !until(m) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		return m
	}
	// Applied, then the device restarts before the grace is up.
	if m := run(func(m *Manager) bool { return m.Version() == 5 }); m.Version() != 5 {
		t.Fatal("config not applied")
	}
	// After the restart it is still on probation, with 1 s, not 1000 h.
	rolledBack := func(m *Manager) bool {
		a := m.Audit()
		return len(a) > 0 && a[len(a)-1].Kind == "rollback"
	}
	if m := run(rolledBack); !rolledBack(m) || m.Version() != 0 {
		t.Fatalf("not rolled back within the good config's grace after a restart: version %d", m.Version())
	}
}
