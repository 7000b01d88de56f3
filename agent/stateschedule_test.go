package agent

import (
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// TestMeaningfulStateIgnoresVolatileFields: the counters that change all
// the time (spool depth, fix time, signal, battery within a 10 % step)
// republish nothing on their own; a meaningful field, a battery step or a
// backlog growing by an order of magnitude from 1,000 records does.
func TestMeaningfulStateIgnoresVolatileFields(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{
			"config_version": uint64(3), "spool_records": 7, "spool_bytes": int64(490), "spool_oldest_s": int64(1),
			"spool_writes": "direct", "spool_health": "ok", "last_fix_ms": int64(1000), "battery": 81,
			"battery_status": "Discharging", "radio_rssi": -77, "radio_registered": 1, "gps": "fix",
			"power_state": "full", "privacy_mode": "off", "capabilities": map[string]any{"firmware_socket": "ok"},
		}
	}
	ref := meaningfulState(base())
	for name, edit := range map[string]func(map[string]any){
		"spool depth": func(f map[string]any) {
			f["spool_records"], f["spool_bytes"], f["spool_oldest_s"] = 900, int64(60000), int64(40)
		},
		"fix time":        func(f map[string]any) { f["last_fix_ms"] = int64(99000) },
		"signal":          func(f map[string]any) { f["radio_rssi"] = -95 },
		"battery in step": func(f map[string]any) { f["battery"] = 80 },
	} {
		f := base()
		edit(f)
		if got := meaningfulState(f); got != ref {
			t.Errorf("%s: republishes the state message:\n%s\n%s", name, ref, got)
		}
	}
	for name, edit := range map[string]func(map[string]any){
		"gps state":      func(f map[string]any) { f["gps"] = "no_fix" },
		"privacy":        func(f map[string]any) { f["privacy_mode"] = "pause" },
		"power":          func(f map[string]any) { f["power_state"] = "low" },
		"registration":   func(f map[string]any) { f["radio_registered"] = 0 },
		"spool health":   func(f map[string]any) { f["spool_health"] = "degraded" },
		"config":         func(f map[string]any) { f["config_version"] = uint64(4) },
		"battery step":   func(f map[string]any) { f["battery"] = 79 },
		"charging":       func(f map[string]any) { f["battery_status"] = "Charging" },
		"backlog":        func(f map[string]any) { f["spool_records"] = 1000 },
		"capability":     func(f map[string]any) { f["capabilities"] = map[string]any{"firmware_socket": "gone"} },
		"a new field":    func(f map[string]any) { f["update"] = "staged" },
		"restart needed": func(f map[string]any) { f["restart_pending"] = []any{"spool.dir"} },
	} {
		f := base()
		edit(f)
		if got := meaningfulState(f); got == ref {
			t.Errorf("%s: does not republish the state message", name)
		}
	}
}

func TestBacklogMagnitude(t *testing.T) {
	for n, want := range map[int]int{0: 0, 999: 0, 1000: 3, 9999: 3, 10000: 4, 86400: 4, 1_000_000: 6} {
		if got := backlogMagnitude(n); got != want {
			t.Errorf("backlogMagnitude(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestStateIntervalFollowsProfile: the profile sets the state interval
// unless broker.state_interval says otherwise, and a reload's new value is
// the one the schedule reads.
func TestStateIntervalFollowsProfile(t *testing.T) {
	a := &Agent{}
	for _, c := range []struct {
		profile string
		set     time.Duration
		want    time.Duration
	}{{"lte", 0, time.Minute}, {"narrowband", 0, 15 * time.Minute}, {"narrowband", 2 * time.Minute, 2 * time.Minute}} {
		cfg := config.Defaults()
		cfg.Broker.Profile, cfg.Broker.StateInterval = c.profile, config.D(c.set)
		a.cfg = cfg
		if got := a.stateInterval(); got != c.want {
			t.Errorf("%s, state_interval %v: %v, want %v", c.profile, c.set, got, c.want)
		}
	}
}
