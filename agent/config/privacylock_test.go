package config

import (
	"slices"
	"testing"
)

func TestWeakerTriggers(t *testing.T) {
	sq := [][]float64{{51.5, -0.1}, {51.5, -0.099}, {51.501, -0.099}}
	locked := Privacy{Docked: true, GPIOLine: "private", Schedule: []string{"Mon-Fri 18:00-08:00"}, TimeZone: "Europe/London",
		Zones: []PrivacyZone{{Name: "home", Action: "drop", Polygon: sq}}}
	same := locked
	same.Schedule = []string{"mon-fri  18:00-08:00", "Sat 00:00-24:00"} // one more entry: stricter
	same.Zones = append(slices.Clone(locked.Zones), PrivacyZone{Name: "gp", Action: "coarse", Polygon: sq})
	if w := WeakerTriggers(locked, same); len(w) != 0 {
		t.Fatalf("stricter refused: %v", w)
	}
	weaker := Privacy{TimeZone: "UTC", Zones: []PrivacyZone{{Name: "home", Action: "coarse", Polygon: sq}}}
	var paths []string
	for _, w := range WeakerTriggers(locked, weaker) {
		paths = append(paths, w.Path)
	}
	want := []string{"privacy.docked", "privacy.gpio_line", "privacy.schedule", "privacy.time_zone", "privacy.zones"}
	if !slices.Equal(paths, want) {
		t.Fatalf("weakenings %v, want %v", paths, want)
	}
	redrawn := same
	redrawn.Zones = []PrivacyZone{{Name: "home", Action: "drop", Polygon: [][]float64{{0, 0}, {0, 1e-3}, {1e-3, 0}}}}
	if w := WeakerTriggers(locked, redrawn); len(w) != 1 || w[0].Path != "privacy.zones" {
		t.Fatalf("a redrawn zone: %v", w)
	}
}
