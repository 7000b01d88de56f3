package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/hwtest/scenario"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// testConfig is a config for one agent on a loopback broker that reports
// every fix.
func testConfig(t *testing.T, brokerURL, gpsPort string) config.Config {
	t.Helper()
	dir := t.TempDir()
	c := config.Defaults()
	c.Device.ID = "car-17"
	c.Device.Fleet = "test"
	c.Broker.URLs = []string{brokerURL}
	c.Broker.BatchAge = config.D(200 * time.Millisecond)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.RequireSigned = false
	c.GPS.Port = gpsPort
	c.GPS.Baud = 9600
	c.Tracking = config.Tracking{}
	c.Hooks.Socket = ""
	c.Status.Socket = ""
	return c
}

func readFixes(t *testing.T, path string) map[int64]kestrel.Position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fixes := map[int64]kestrel.Position{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		tm, p, err := wire.ParseFixJSON(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		fixes[tm] = p
	}
	return fixes
}

// TestTrackArrivesWhole runs the agent on a recorded car track replayed
// over a pseudo-terminal and checks that the platform receives every fix,
// equal to the source, with no gaps.
func TestTrackArrivesWhole(t *testing.T) {
	b := broker.StartMochi(t)
	track, err := os.ReadFile("../transport/wire/testdata/tracks/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	want := readFixes(t, "../transport/wire/testdata/tracks/visnjan-car.fixes.jsonl")
	sim, err := gpssim.New(gpssim.Config{Log: track, Baud: 9600, Speed: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plat, err := platform.Subscribe(ctx, platform.Options{URL: b.URL(), Fleet: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer plat.Close()

	cfg := testConfig(t, b.URL(), sim.Path())
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	// Start replaying only once the agent runs, so no fix is sent to a
	// port nobody reads.
	if err := sim.WaitOpen(ctx); err != nil {
		t.Fatalf("agent never opened the GPS port: %v", err)
	}
	go sim.Run(ctx)

	positions := func(p *platform.Platform) int {
		n := 0
		for _, a := range p.Unique() {
			if a.Record.Kind() == kestrel.KindPosition {
				n++
			}
		}
		return n
	}
	if err := plat.WaitFor(ctx, func(p *platform.Platform) bool { return positions(p) >= len(want) }); err != nil {
		got := map[int64]bool{}
		for _, a := range plat.Unique() {
			got[a.Record.Time] = true
		}
		for tm := range want {
			if !got[tm] {
				t.Logf("missing fix at %s", time.UnixMilli(tm).UTC())
			}
		}
		t.Logf("spool: %+v", a.Spool().Metrics())
		t.Fatalf("platform got %d of %d fixes: %v", positions(plat), len(want), err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("agent run: %v", err)
	}

	for _, arr := range plat.Unique() {
		r := arr.Record
		pos, ok := r.Body.(*kestrel.Position)
		if !ok {
			continue
		}
		if r.Device != "car-17" || r.Boot != a.Boot() {
			t.Errorf("record %d: device %q boot %d, want car-17 boot %d", r.Seq, r.Device, r.Boot, a.Boot())
		}
		src, ok := want[r.Time]
		if !ok {
			t.Errorf("position at %s is not in the source track", time.UnixMilli(r.Time).UTC())
			continue
		}
		if !scenario.WithinTolerance(pos, &src) {
			t.Errorf("position at %s: got %+v, want %+v", time.UnixMilli(r.Time).UTC(), *pos, src)
		}
	}
	if gaps := plat.Gaps(); len(gaps) != 0 {
		t.Errorf("gaps: %v", gaps)
	}
	if errs := plat.Errors(); len(errs) != 0 {
		t.Errorf("undecodable payloads: %v", errs)
	}
}

// A broker password file that other users can read is refused, with the
// fix in the message, before anything connects.
func TestWorldReadablePasswordFileRefused(t *testing.T) {
	b := broker.StartMochi(t)
	c := testConfig(t, b.URL(), "")
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Broker.Username, c.Broker.PasswordFile = "car-17", pw
	// Group-readable (0640) is refused as well as world-readable: the
	// password file is the agent user's own, 0600.
	for _, mode := range []os.FileMode{0o644, 0o640} {
		os.Chmod(pw, mode)
		a, err := agent.New(c, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = a.Run(ctx)
		cancel()
		a.Close()
		if err == nil || !strings.Contains(err.Error(), "open to other users") || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("run with a %04o password file: %v", mode, err)
		}
	}
}

// The TLS client key is held to the same rule: a 0640 key is refused.
func TestGroupReadableClientKeyRefused(t *testing.T) {
	b := broker.StartMochi(t)
	c := testConfig(t, b.URL(), "")
	ca := broker.NewCA(t)
	c.Broker.CAFile = ca.CAFile
	c.Broker.CertFile, c.Broker.KeyFile = ca.IssueClient(t, "car-17")
	os.Chmod(c.Broker.KeyFile, 0o640)
	a, err := agent.New(c, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "broker.key_file") {
		t.Fatalf("run with a 0640 client key: %v", err)
	}
}
