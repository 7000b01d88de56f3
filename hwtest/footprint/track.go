// Package footprint measures the real kestrel binary under nominal load
// (10 Hz GPS, 1 Hz radio polling, 50 Hz accelerometer) and while idle:
// resident memory, CPU share of one core, wakeups per second and bytes
// written to flash per hour. The measurement is a test behind
// KESTREL_FOOTPRINT=1 (see footprint_test.go and docs/benchmarks.md).
//
// Retime, the helper that turns a recorded 1 Hz track into a receiver
// running at any rate with today's date, is shared with the self-test's
// tests.
package footprint

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Retime rewrites the RMC and GGA times and dates of an NMEA log so that
// receiver cycle k is stamped start + k*step (a new cycle begins where the
// recorded time changes), and recomputes the checksums. Other lines pass
// unchanged. Replayed by hwtest/gpssim at Speed = 1/step, the log looks
// like a live receiver whose clock agrees with the system's, at that rate.
func Retime(log []byte, start time.Time, step time.Duration) []byte {
	var out bytes.Buffer
	cycle := -1
	var last string
	for _, line := range strings.Split(string(log), "\n") {
		line = strings.TrimRight(line, "\r")
		star := strings.LastIndexByte(line, '*')
		if !strings.HasPrefix(line, "$") || star < 7 {
			if line != "" {
				out.WriteString(line + "\n")
			}
			continue
		}
		f := strings.Split(line[1:star], ",")
		typ := f[0][min(2, len(f[0])):]
		if (typ != "RMC" && typ != "GGA") || len(f) < 2 {
			out.WriteString(line + "\n")
			continue
		}
		if f[1] != last {
			cycle++
			last = f[1]
		}
		ts := start.UTC().Add(time.Duration(cycle) * step)
		f[1] = fmt.Sprintf("%s.%02d", ts.Format("150405"), ts.Nanosecond()/1e7)
		if typ == "RMC" && len(f) > 9 {
			f[9] = ts.Format("020106")
		}
		body := strings.Join(f, ",")
		var cs byte
		for i := 0; i < len(body); i++ {
			cs ^= body[i]
		}
		fmt.Fprintf(&out, "$%s*%02X\n", body, cs)
	}
	return out.Bytes()
}
