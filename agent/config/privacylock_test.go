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

// TestPrivacyTriggersParse: the documented TOML shapes load and validate,
// and bad ones are refused naming their key.
func TestPrivacyTriggersParse(t *testing.T) {
	c, err := Parse([]byte(`
[device]
id = "bwc-0001"
fleet = "met"
[gpio]
lines = [{name = "private", chip = "gpiochip0", offset = 4}]
[privacy]
docked = true
gpio_line = "private"
schedule = ["Mon-Fri 18:00-08:00", "Sat,Sun 00:00-24:00"]
time_zone = "Europe/London"
[[privacy.zones]]
name = "hospital"
action = "drop"
polygon = [[51.4990, -0.1190], [51.4990, -0.1160], [51.5010, -0.1160], [51.5010, -0.1190]]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Privacy.Zones) != 1 || len(c.Privacy.Zones[0].Polygon) != 4 || c.Privacy.Zones[0].Polygon[2][0] != 51.5010 {
		t.Fatalf("zones %+v", c.Privacy.Zones)
	}
	for key, mut := range map[string]func(*Config){
		"privacy.gpio_line": func(c *Config) { c.Privacy.GPIOLine = "siren" },
		"privacy.schedule":  func(c *Config) { c.Privacy.Schedule = []string{"Mon 18:00"} },
		"privacy.time_zone": func(c *Config) { c.Privacy.TimeZone = "Mars/Olympus" },
		"privacy.zones[0]":  func(c *Config) { c.Privacy.Zones[0].Action = "hide" },
		"privacy.zones":     func(c *Config) { c.Privacy.Zones = make([]PrivacyZone, 65) },
		"privacy.zones[1].name": func(c *Config) {
			c.Privacy.Zones = append(c.Privacy.Zones, c.Privacy.Zones[0])
		},
		"radio.issi": func(c *Config) { c.Radio.ISSI = "12-34" },
	} {
		d := Clone(c)
		mut(&d)
		err := d.Validate()
		found := false
		for _, fe := range FieldErrors(err) {
			found = found || fe.Path == key
		}
		if !found {
			t.Errorf("%s: not refused by name: %v", key, err)
		}
	}
}
