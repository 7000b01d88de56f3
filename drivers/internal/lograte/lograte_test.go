package lograte

import (
	"testing"
	"time"
)

// TestLimiter: the first occurrence is logged, then one per interval, each
// logged one carrying the running total and how many were skipped.
func TestLimiter(t *testing.T) {
	var l Limiter
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type seen struct{ total, suppressed uint64 }
	var logged []seen
	for i := range 10000 {
		// 10000 occurrences 10 ms apart: 100 s.
		if total, sup, ok := l.Note(t0.Add(time.Duration(i) * 10 * time.Millisecond)); ok {
			logged = append(logged, seen{total, sup})
		}
	}
	want := []seen{{1, 0}, {6001, 5999}}
	if len(logged) != len(want) || logged[0] != want[0] || logged[1] != want[1] {
		t.Fatalf("logged %v, want %v", logged, want)
	}
	// A clock that steps back (NTP) logs nothing until an interval has passed.
	if _, _, ok := l.Note(t0); ok {
		t.Error("logged after the clock stepped back")
	}
	short := Limiter{Every: time.Second}
	n := 0
	for i := range 50 {
		if _, _, ok := short.Note(t0.Add(time.Duration(i) * 100 * time.Millisecond)); ok {
			n++
		}
	}
	if n != 5 {
		t.Errorf("Every 1s over 5 s: %d logged, want 5", n)
	}
}
