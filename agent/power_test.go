package agent_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/drivers/gpio"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/hwtest/footprint"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
)

// TestIgnitionOffSlowsReporting runs the real agent with a replayed GPS
// track, the GPIO driver on its ioctl-boundary fake, and a fake
// accelerometer: with the ignition on every fix is reported; ignition off
// slows reporting to power.reduced_interval; a crash (an emergency)
// brings every fix back at once.
func TestIgnitionOffSlowsReporting(t *testing.T) {
	b := broker.StartMochi(t)
	track, err := os.ReadFile("../transport/wire/testdata/tracks/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	// Twice the recorded track, retimed to one cycle a second (the
	// recording has gaps of up to 12 s), replayed ten times as fast.
	track = footprint.Retime(append(append([]byte(nil), track...), track...), time.Now(), time.Second)
	sim, err := gpssim.New(gpssim.Config{Log: track, Baud: 9600, Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	tree, _ := fakesysfs.New(t.TempDir())
	dev, _ := tree.AddAccel("lis3dh", "0.009806")
	tree.SetAccel(dev, 0, 0, 1000)
	chips := gpio.NewFakeChips(map[string]int{"gpiochip0": 8})
	chips.Set("gpiochip0", 3, true) // ignition on at start

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t, b.URL(), sim.Path())
	cfg.Sensors.SysfsRoot, cfg.Sensors.DevRoot = tree.Root, t.TempDir()
	cfg.Sensors.AccelRate = 50
	cfg.Sensors.BatteryPeriod.Duration, cfg.Sensors.ThermalPeriod.Duration = 0, 0
	cfg.GPIO.Lines = []config.GPIOLine{{Name: "ignition", Chip: "gpiochip0", Offset: 3}}
	// Ignition on and the emergency each hold full reporting for 2 s.
	cfg.Power.WakeHold = config.D(2 * time.Second)
	cfg.Power.ReducedInterval = config.D(5 * time.Second) // of track time: one fix in five

	var mu sync.Mutex
	var fixes []int64 // record times of reported fixes
	var emergencyAt int64
	a, err := agent.New(cfg, agent.Options{
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Version:  "test",
		GPIOFake: chips,
		OnRecord: func(r kestrel.Record) {
			mu.Lock()
			defer mu.Unlock()
			switch b := r.Body.(type) {
			case *kestrel.Position:
				fixes = append(fixes, r.Time)
			case *kestrel.Event:
				if b.Type == kestrel.EventEmergency && emergencyAt == 0 {
					emergencyAt = int64(len(fixes))
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	stop := runWithGPS(t, ctx, a, sim)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(fixes) }
	waitFixes := func(n int) {
		t.Helper()
		for count() < n {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out at %d of %d fixes", count(), n)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	span := func(from, to int) (n int, trackSeconds float64) {
		mu.Lock()
		defer mu.Unlock()
		return to - from, float64(fixes[to-1]-fixes[from]) / 1000
	}

	waitFixes(20)
	on, onSpan := span(5, 20)
	onGap := onSpan / float64(on-1)
	if onGap > 1.5 {
		t.Fatalf("ignition on: a fix every %.1f s of track, want every fix (1 s)", onGap)
	}
	if st := a.StateFields()["power_state"]; st != "full" {
		t.Fatalf("power_state %v with the ignition on", st)
	}

	chips.Set("gpiochip0", 3, false)    // ignition off
	time.Sleep(2500 * time.Millisecond) // past wake_hold since ignition on
	off0 := count()
	waitFixes(off0 + 4)
	off, offSpan := span(off0, off0+4)
	if gap := offSpan / float64(off-1); gap < 4.5 {
		t.Fatalf("ignition off: a fix every %.1f s of track, want every 5 s", gap)
	}
	if st := a.StateFields()["power_state"]; st != "reduced" {
		t.Fatalf("power_state %v with the ignition off", st)
	}
	if ign := a.StateFields()["ignition"]; ign != false {
		t.Fatalf("ignition %v in the state, want false", ign)
	}

	tree.SetAccel(dev, -3000, 0, 1000) // a 3 g impact: a crash emergency
	time.Sleep(200 * time.Millisecond)
	tree.SetAccel(dev, 0, 0, 1000)
	mu.Lock()
	e0 := int(emergencyAt)
	mu.Unlock()
	if e0 == 0 {
		t.Fatal("no emergency from the crash")
	}
	waitFixes(e0 + 10)
	back, backSpan := span(e0, e0+10)
	if gap := backSpan / float64(back-1); gap > 1.5 {
		t.Fatalf("after the emergency: a fix every %.1f s of track, want every fix at once", gap)
	}
	t.Logf("a fix every %.1f s of track with the ignition on, %.1f s off, %.1f s after the emergency", onGap, offSpan/float64(off-1), backSpan/float64(back-1))
	stop()
}
