package fleetctl

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/footprint"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
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

// probationConfig is device bwc-0001 of fleet met on the broker at url,
// trusting pub, with a 3 s probation.
func probationConfig(t *testing.T, url, pub string) config.Config {
	t.Helper()
	dir := t.TempDir()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = "bwc-0001", "met"
	c.Broker.URLs = []string{url}
	c.Broker.BatchAge = config.D(100 * time.Millisecond)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.TrustedKeys = []string{pub}
	c.Remote.RollbackAfter = config.D(3 * time.Second)
	c.Hooks.Socket = ""
	return c
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
	c := probationConfig(t, home.URL(), pub) // the good config's grace: 3 s
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

// healthRig is the real agent with a simulated GPS receiver (9600 baud,
// sending garbage at any other line speed, as a real UART would) and a
// simulated LTE modem, on a real broker, with a 3 s probation.
func healthRig(t *testing.T) (*agent.Agent, *Manager, *atmodem.Modem, *broker.Observer, *platform, ed25519.PrivateKey) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	track, err := os.ReadFile("../selftest/testdata/visnjan-car.nmea") // a real capture, see its header
	if err != nil {
		t.Fatal(err)
	}
	sim, err := gpssim.New(gpssim.Config{Log: footprint.Retime(track, time.Now(), time.Second), Baud: 9600, Speed: 5, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	go sim.Run(ctx)
	modem, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { modem.Close() })
	b := broker.StartMochi(t)
	priv, pub := testKey(1)
	c := probationConfig(t, b.URL(), pub)
	dir := t.TempDir()
	c.GPS.Port, c.GPS.Baud = sim.Path(), 9600
	c.Radio.Port, c.Radio.Profile, c.Radio.Poll = modem.Path(), "lte", config.D(time.Second)
	c.Sensors.SysfsRoot = filepath.Join(dir, "sys")
	c.GPIO.DevRoot = filepath.Join(dir, "dev")
	a, m := realAgent(t, c)
	return a, m, modem, b.Observe("kestrel/v1/met/bwc-0001/config/reported"), newPlatform(t, b.URL()), priv
}

// TestGPSHealthAfterApply: a change of gps.* is kept only if the receiver
// then sends valid sentences within the probation. A baud rate the
// receiver does not speak (it stays plugged in, so the pre-apply check
// passes) leaves it sending garbage: rolled back, with the reason, and
// the GPS works again.
func TestGPSHealthAfterApply(t *testing.T) {
	a, m, _, obs, p, priv := healthRig(t)
	me := fleet.Device("met", "bwc-0001")
	p.pushConfig(priv, me, 1, "[gps]\nwatchdog = \"6s\"\n")
	waitGood(t, m, me.Scope, 1)

	p.pushConfig(priv, me, 2, "[gps]\nbaud = 4800\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusApplied })
	r := waitReport(t, obs, "bwc-0001", 30*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusRolledBack })
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "baud 4800) sent no valid NMEA sentence") || r.Running != 1 {
		t.Fatalf("rollback report: %+v", r)
	}
	if got := a.Config().GPS.Baud; got != 9600 {
		t.Fatalf("after rollback gps.baud is %d", got)
	}
	since := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for a.LastSign("gps").Before(since) {
		if time.Now().After(deadline) {
			t.Fatal("no NMEA sentence after the rollback")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRadioHealthAfterApply: a change of radio.* is kept only if the
// radio answers within the probation; one that goes silent is rolled
// back, with the reason.
func TestRadioHealthAfterApply(t *testing.T) {
	a, m, modem, obs, p, priv := healthRig(t)
	me := fleet.Device("met", "bwc-0001")
	p.pushConfig(priv, me, 1, "[radio]\npoll = \"2s\"\n")
	waitGood(t, m, me.Scope, 1)

	modem.SetSilent(true)
	p.pushConfig(priv, me, 2, "[radio]\npoll = \"3s\"\n")
	r := waitReport(t, obs, "bwc-0001", 30*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusRolledBack })
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "radio "+modem.Path()+" (lte) did not answer") || r.Running != 1 {
		t.Fatalf("rollback report: %+v", r)
	}
	if got := a.Config().Radio.Poll.Duration; got != 2*time.Second {
		t.Fatalf("after rollback radio.poll is %s", got)
	}
}
