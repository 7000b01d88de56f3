package offduty

import (
	"strings"
	"testing"
	"time"
)

func TestScheduleOvernightAndWeekend(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	s, err := ParseSchedule([]string{"Mon-Fri 18:00-08:00", "sat,SUN 00:00-24:00"}, london)
	if err != nil {
		t.Fatal(err)
	}
	at := func(v string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", v, london)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for v, want := range map[string]bool{
		"2026-12-07 17:59": false, // Monday
		"2026-12-07 18:00": true,
		"2026-12-08 07:59": true, // Tuesday, from Monday's evening
		"2026-12-08 08:00": false,
		"2026-12-05 12:00": true,  // Saturday
		"2026-12-07 07:00": false, // Monday morning: Sunday's whole day ended at midnight
		"2026-12-04 17:00": false, // Friday
		"2026-07-06 18:30": true,  // Monday in summer time: still local 18:00
		"2026-07-06 17:30": false,
	} {
		if got := s.Active(at(v)); got != want {
			t.Errorf("%s: active %v, want %v", v, got, want)
		}
	}
	next, ok := s.Next(at("2026-12-07 12:00"))
	if !ok || !next.Equal(at("2026-12-07 18:00")) {
		t.Errorf("next edge after Monday noon: %v %v, want Monday 18:00", next, ok)
	}
	// Friday 18:00 runs on through the weekend to Monday 00:00.
	next, ok = s.Next(at("2026-12-04 19:00"))
	if !ok || !next.Equal(at("2026-12-07 00:00")) {
		t.Errorf("next edge after Friday evening: %v, want Monday 00:00", next)
	}
	// Across the end of summer time (25 October 2026, 02:00 BST -> 01:00 GMT).
	next, ok = s.Next(at("2026-10-24 12:00"))
	if !ok || !next.Equal(at("2026-10-26 00:00")) || next.Sub(at("2026-10-24 12:00")) != 37*time.Hour {
		t.Errorf("next edge across the clock change: %v", next)
	}
}

func TestScheduleRefusesNonsense(t *testing.T) {
	for _, e := range []string{
		"", "Mon", "Mon 18:00", "Mon 18:00-18:00", "Mon 25:00-08:00", "Mon 18:00-24:01",
		"Mon 24:00-08:00", "Mo 18:00-08:00", "Mon-Fri 6:00-08:00", "Mon 18:00-08:00x",
		strings.Repeat("Mon,", 20) + "Tue 18:00-08:00",
	} {
		if _, err := ParseSchedule([]string{e}, nil); err == nil {
			t.Errorf("%q accepted", e)
		}
	}
	if _, err := ParseSchedule(make([]string, MaxEntries+1), nil); err == nil {
		t.Error("too many entries accepted")
	}
	s, err := ParseSchedule([]string{"Fri-Mon 22:00-06:00", "Wed 12:00-13:00"}, nil)
	if err != nil || len(s.spans) != 5 {
		t.Fatalf("Fri-Mon wraps through Sunday: %v, %d spans", err, len(s.spans))
	}
}

func TestZoneContains(t *testing.T) {
	// A square of about 220 m round a house, and a concave L.
	sq, err := NewZone("home", "drop", [][]float64{{51.5000, -0.1010}, {51.5020, -0.1010}, {51.5020, -0.0990}, {51.5000, -0.0990}, {51.5000, -0.1010}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewZone("yard", "coarse", [][]float64{{0, 0}, {0.002, 0}, {0.002, 0.001}, {0.001, 0.001}, {0.001, 0.002}, {0, 0.002}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		z        *Zone
		lat, lon float64
		want     bool
	}{
		{sq, 51.5010, -0.1000, true},
		{sq, 51.5021, -0.1000, false},
		{sq, 51.5010, -0.0989, false},
		{l, 0.0005, 0.0015, true},
		{l, 0.0015, 0.0005, true},
		{l, 0.0015, 0.0015, false}, // the notch
		{l, -0.0001, 0.0005, false},
	} {
		if got := c.z.Contains(int32(c.lat*1e7), int32(c.lon*1e7)); got != c.want {
			t.Errorf("%s contains %g,%g: %v, want %v", c.z.Name, c.lat, c.lon, got, c.want)
		}
	}
}

func TestZoneRefusesNonsense(t *testing.T) {
	big := make([][]float64, MaxVertices+1)
	for i := range big {
		big[i] = []float64{float64(i) / 1e4, float64(i%2) / 1e3}
	}
	for name, c := range map[string]struct {
		name, action string
		poly         [][]float64
	}{
		"two vertices":  {"a", "drop", [][]float64{{0, 0}, {0, 1e-3}}},
		"bad action":    {"a", "hide", [][]float64{{0, 0}, {0, 1e-3}, {1e-3, 0}}},
		"no name":       {"", "drop", [][]float64{{0, 0}, {0, 1e-3}, {1e-3, 0}}},
		"not a lat":     {"a", "drop", [][]float64{{91, 0}, {0, 1e-3}, {1e-3, 0}}},
		"three numbers": {"a", "drop", [][]float64{{0, 0, 0}, {0, 1e-3}, {1e-3, 0}}},
		"antimeridian":  {"a", "drop", [][]float64{{0, 179.9}, {0, -179.9}, {0.1, -179.9}}},
		"too many":      {"a", "drop", big},
		"no area":       {"a", "drop", [][]float64{{0, 0}, {0, 1e-3}, {0, 2e-3}}},
	} {
		if _, err := NewZone(c.name, c.action, c.poly); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParseSchedule: no entry panics the parser, and what parses answers
// Active and Next without panicking, Next moving forward.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"Mon-Fri 18:00-08:00", "Sat,Sun 00:00-24:00", "fri-mon 22:00-06:00", "Mon 24:00-01:00", "Sun 23:59-00:00", " Tue  01:00 - 02:00 ", "Mon-"} {
		f.Add(s)
	}
	base := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, e string) {
		s, err := ParseSchedule(strings.Split(e, "|"), time.UTC)
		if err != nil {
			return
		}
		s.Active(base)
		if n, ok := s.Next(base); ok && !n.After(base) {
			t.Fatalf("Next %v not after %v", n, base)
		}
	})
}

// FuzzZone: arbitrary vertices never panic NewZone or Contains.
func FuzzZone(f *testing.F) {
	f.Add(51.5, -0.101, 51.502, -0.099, 51.501, -0.1, int32(515010000), int32(-1000000))
	f.Add(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, int32(0), int32(0))
	f.Add(90.0, 180.0, -90.0, -180.0, 89.5, 179.5, int32(900000000), int32(1800000000))
	f.Fuzz(func(t *testing.T, a, b, c, d, e, g float64, lat, lon int32) {
		z, err := NewZone("z", "drop", [][]float64{{a, b}, {c, d}, {e, g}})
		if err != nil {
			return
		}
		z.Contains(lat, lon)
		z.Contains(int32(z.lat[0]), int32(z.lon[0]))
	})
}
