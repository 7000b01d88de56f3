package power_test

import (
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/power"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func input(name string, v int64) *kestrel.Record {
	return &kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventInput, Source: "gpio", Name: name, Value: v}}
}

func TestIgnitionBatteryWake(t *testing.T) {
	c := &clock{time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	cfg := config.Defaults().Power
	var changes []power.State
	p := power.New(cfg, c.now, func(s power.State) { changes = append(changes, s) })
	step := func(d time.Duration, rec *kestrel.Record, want power.State) {
		t.Helper()
		c.t = c.t.Add(d)
		p.Observe(rec)
		if got := p.Status().State; got != want {
			t.Fatalf("at +%v: state %v, want %v (%+v)", d, got, want, p.Status())
		}
	}
	tick := &kestrel.Record{Body: &kestrel.Thermal{}}
	step(0, input("ignition", 1), power.Full)
	step(time.Second, input("ignition", 0), power.Full) // woken by ignition on 1 s ago: wake_hold
	step(cfg.WakeHold.Duration, tick, power.Reduced)
	step(cfg.LowPowerAfter.Duration-time.Second, tick, power.Reduced)
	step(time.Second, tick, power.Low)
	// An emergency restores full at once; it holds for wake_hold.
	step(time.Second, &kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventEmergency}}, power.Full)
	step(cfg.WakeHold.Duration, tick, power.Reduced)
	// Movement likewise.
	c.t = c.t.Add(time.Second)
	p.Wake("movement")
	if p.Status().State != power.Full {
		t.Fatal("movement did not restore full")
	}
	// Ignition on: full, and the battery decides alone.
	step(time.Second, input("ignition", 1), power.Full)
	step(cfg.WakeHold.Duration, &kestrel.Record{Body: &kestrel.Battery{Capacity: 10}}, power.Reduced)
	if st := p.Status(); st.Battery != 10 || st.Ignition != 1 || st.Why != "battery low" {
		t.Fatalf("status %+v", st)
	}
	step(time.Second, &kestrel.Record{Body: &kestrel.Battery{Capacity: 60}}, power.Full)
	// Another line's events are not the ignition.
	step(time.Second, input("blue_lights", 0), power.Full)
	want := []power.State{power.Reduced, power.Low, power.Full, power.Reduced, power.Full, power.Reduced, power.Full}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func TestProfiles(t *testing.T) {
	cfg := config.Defaults().Power
	base := config.Defaults().Tracking
	if got := power.Tracking(cfg, power.Full, base); got.MaxInterval != base.MaxInterval || got.Distance != base.Distance {
		t.Fatalf("full changed tracking: %+v", got)
	}
	r := power.Tracking(cfg, power.Reduced, base)
	if r.MinInterval != cfg.ReducedInterval || r.MaxInterval != cfg.ReducedInterval || r.Distance != 0 || r.EmergencyWindow != base.EmergencyWindow {
		t.Fatalf("reduced tracking %+v", r)
	}
	if got := power.RadioPoll(cfg, power.Low, 10*time.Second); got != cfg.LowRadioPoll.Duration {
		t.Fatalf("low radio poll %v", got)
	}
	if got := power.RadioPoll(cfg, power.Full, 10*time.Second); got != 10*time.Second {
		t.Fatalf("full radio poll %v", got)
	}
}
