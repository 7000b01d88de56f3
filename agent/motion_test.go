package agent_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
)

// TestCrashThroughAgent runs the real agent with a replayed GPS track and a
// fake IIO accelerometer: an impact held for a second raises exactly one
// emergency, at emergency priority, carrying the last fix, and it reaches
// the platform.
func TestCrashThroughAgent(t *testing.T) {
	t.Run("polled", func(t *testing.T) { crashThroughAgent(t, false) })
	t.Run("buffered", func(t *testing.T) { crashThroughAgent(t, true) })
}

func crashThroughAgent(t *testing.T, buffered bool) {
	b := broker.StartMochi(t)
	track, err := os.ReadFile("../transport/wire/testdata/tracks/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := gpssim.New(gpssim.Config{Log: track, Baud: 9600, Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	tree, err := fakesysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 1000 counts = 9.806 m/s²
	var setAccel func(x, y, z int)
	devRoot := t.TempDir()
	if buffered {
		ba, err := tree.AddBufferedAccel("lis3dh", "0.009806", "le:s16/16>>0", devRoot)
		if err != nil {
			t.Fatal(err)
		}
		defer ba.Close()
		var cur atomic.Pointer[[3]int]
		cur.Store(&[3]int{0, 0, 1000})
		setAccel = func(x, y, z int) { cur.Store(&[3]int{x, y, z}) }
		go ba.Feed(ctx, 50, func(int) [3]int { return *cur.Load() })
	} else {
		dev, _ := tree.AddAccel("lis3dh", "0.009806")
		setAccel = func(x, y, z int) { tree.SetAccel(dev, x, y, z) }
	}
	setAccel(0, 0, 1000)
	plat, err := platform.Subscribe(ctx, platform.Options{URL: b.URL(), Fleet: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer plat.Close()

	cfg := testConfig(t, b.URL(), sim.Path())
	cfg.Sensors.SysfsRoot = tree.Root
	cfg.Sensors.DevRoot = devRoot
	cfg.Sensors.AccelRate = 50
	cfg.Sensors.BatteryPeriod.Duration, cfg.Sensors.ThermalPeriod.Duration = 0, 0
	var mu sync.Mutex
	var emergencies []kestrel.Record
	fixes := 0
	a, err := agent.New(cfg, agent.Options{
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Version: "test",
		OnRecord: func(r kestrel.Record) {
			mu.Lock()
			defer mu.Unlock()
			switch b := r.Body.(type) {
			case *kestrel.Position:
				fixes++
			case *kestrel.Event:
				if b.Type == kestrel.EventEmergency {
					emergencies = append(emergencies, r)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	stop := runWithGPS(t, ctx, a, sim)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	// Calibration takes the first second at rest; wait for fixes too.
	waitFor("fixes", func() bool { mu.Lock(); defer mu.Unlock(); return fixes >= 3 })
	time.Sleep(1500 * time.Millisecond)
	if buffered {
		if v, _ := tree.Read("bus/iio/devices/iio:device0/buffer/enable"); strings.TrimSpace(v) != "1" {
			t.Fatalf("the agent is not reading the buffer (enable=%q)", v)
		}
	}
	// A 3 g frontal impact, read for a second, then rest.
	setAccel(-3000, 400, 1000)
	waitFor("the crash", func() bool { mu.Lock(); defer mu.Unlock(); return len(emergencies) > 0 })
	time.Sleep(time.Second)
	setAccel(0, 0, 1000)
	time.Sleep(500 * time.Millisecond)

	mu.Lock()
	got := append([]kestrel.Record(nil), emergencies...)
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d emergencies, want exactly 1", len(got))
	}
	e := got[0].Body.(*kestrel.Event)
	if e.Name != "crash" || got[0].Priority != kestrel.PriorityEmergency || !strings.Contains(e.Text, "last fix ") {
		t.Fatalf("crash %+v priority %v", e, got[0].Priority)
	}
	if err := plat.WaitFor(ctx, func(p *platform.Platform) bool {
		for _, arr := range p.Unique() {
			if ev, ok := arr.Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency && ev.Name == "crash" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("crash never reached the platform: %v", err)
	}
	stop()
}

// runWithGPS runs the agent, starts replaying the GPS once the agent has
// the port open, and returns a stop that ends the run and checks it.
func runWithGPS(t *testing.T, ctx context.Context, a *agent.Agent, sim *gpssim.Sim) (stop func()) {
	t.Helper()
	done := make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	go func() { done <- a.Run(runCtx) }()
	if err := sim.WaitOpen(ctx); err != nil {
		t.Fatal(err)
	}
	go sim.Run(ctx)
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("agent run: %v", err)
		}
	}
}
