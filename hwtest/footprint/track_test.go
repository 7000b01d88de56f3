package footprint

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/serialport"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

func TestRetime(t *testing.T) {
	log, err := os.ReadFile("../../agent/selftest/testdata/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 26, 23, 59, 58, 0, time.UTC)
	out := Retime(log, start, 100*time.Millisecond)
	for _, l := range bytes.Split(out, []byte("\n")) {
		if len(l) > 0 && l[0] == '$' && !serialport.ValidNMEA(l) {
			t.Fatalf("bad checksum: %s", l)
		}
	}
	// Every fix is kept, 100 ms apart, across midnight.
	var times []int64
	if _, err := nmea.Decode(bytes.NewReader(out), nmea.Options{}, func(f nmea.Fix) error {
		times = append(times, f.Time)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(times) != 104 {
		t.Fatalf("%d fixes, want the track's 104", len(times))
	}
	for k, ms := range times {
		if want := start.Add(time.Duration(k) * 100 * time.Millisecond).UnixMilli(); ms != want {
			t.Fatalf("fix %d at %s, want %s", k, time.UnixMilli(ms).UTC(), time.UnixMilli(want).UTC())
		}
	}
}
