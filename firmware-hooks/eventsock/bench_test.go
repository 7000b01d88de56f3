package eventsock

import (
	"testing"
)

func BenchmarkParseLine(b *testing.B) {
	line := []byte(`battery_critical name=pack value=4 text="cell 2 below 3.3 V" time=1764172800123` + "\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := ParseLine(line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvent is one event end to end: connect per event as
// `kestrel hook send` does, against a persistent connection (a firmware
// daemon), both through the real server to emit.
func BenchmarkEvent(b *testing.B) {
	b.Run("send-per-connection", func(b *testing.B) {
		path, _, _ := startB(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Send(path, "docked", map[string]string{"name": "cradle"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("persistent-connection", func(b *testing.B) {
		path, _, _ := startB(b)
		c := dial(b, path)
		b.ReportAllocs()
		for b.Loop() {
			if r := c.ask("docked name=cradle\n"); r != "ok" {
				b.Fatal(r)
			}
		}
	})
}

func startB(b *testing.B) (string, *Server, *sink) {
	return start(b, Options{RatePerSec: 1e9, Burst: 1e9})
}
