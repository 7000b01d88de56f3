package config

import (
	"fmt"
	"slices"
	"strings"
)

// Weakening is one way a lower scope's privacy triggers would weaken a
// locked fleet scope's.
type Weakening struct {
	Path string // privacy.docked, privacy.schedule, ...
	Why  string
}

// WeakerTriggers lists how next's off-duty triggers and zones are weaker
// than locked's: under privacy.locked a lower scope may add schedule
// entries and zones, turn docked on, make a zone's action stricter, never
// the reverse. It covers the trigger keys; privacy.mode, on_mode and grid
// are the fleet lock's own check (agent/fleetctl checkPrivacyLock), which
// adds these.
func WeakerTriggers(locked, next Privacy) []Weakening {
	var out []Weakening
	if locked.Docked && !next.Docked {
		out = append(out, Weakening{"privacy.docked", "docked privacy may not be turned off"})
	}
	if locked.GPIOLine != "" && next.GPIOLine != locked.GPIOLine {
		out = append(out, Weakening{"privacy.gpio_line", fmt.Sprintf("the privacy switch %q may not be changed", locked.GPIOLine)})
	}
	norm := func(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }
	have := map[string]bool{}
	for _, e := range next.Schedule {
		have[norm(e)] = true
	}
	for _, e := range locked.Schedule {
		if !have[norm(e)] {
			out = append(out, Weakening{"privacy.schedule", fmt.Sprintf("entry %q may not be removed", e)})
		}
	}
	if len(locked.Schedule) > 0 && next.TimeZone != locked.TimeZone {
		out = append(out, Weakening{"privacy.time_zone", fmt.Sprintf("the schedule's time zone %q may not be changed", locked.TimeZone)})
	}
	for _, lz := range locked.Zones {
		i := slices.IndexFunc(next.Zones, func(z PrivacyZone) bool { return z.Name == lz.Name })
		switch {
		case i < 0:
			out = append(out, Weakening{"privacy.zones", fmt.Sprintf("zone %q may not be removed", lz.Name)})
		case !slices.EqualFunc(next.Zones[i].Polygon, lz.Polygon, slices.Equal[[]float64]):
			out = append(out, Weakening{"privacy.zones", fmt.Sprintf("zone %q may not be redrawn", lz.Name)})
		case lz.Action == "drop" && next.Zones[i].Action != "drop":
			out = append(out, Weakening{"privacy.zones", fmt.Sprintf("zone %q: %q is weaker than \"drop\"", lz.Name, next.Zones[i].Action)})
		}
	}
	return out
}
