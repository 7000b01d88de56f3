package nmea

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
	"golang.org/x/sys/unix"
)

// countingPort counts the driver's reads on a tty read through Go's poller
// (as agent/serialport opens it).
type countingPort struct {
	*os.File
	reads atomic.Int64
}

func (c *countingPort) Read(b []byte) (int, error) {
	c.reads.Add(1)
	return c.File.Read(b)
}

// TestDriverReadsPerBurst: on a port with deadlines the driver wakes when
// the receiver sends or something is due (the held fix's release, the
// watchdog), not on a fixed tick: a silent second costs at most the
// watchdog's read, and each burst of a 1 Hz receiver one read for the burst
// and one for its release. With a 100 ms tick this was 10 reads a second
// whatever the line did.
func TestDriverReadsPerBurst(t *testing.T) {
	m, err := pty.Open()
	if err != nil {
		t.Skip("no pty:", err)
	}
	defer m.Close()
	f, err := os.OpenFile(m.Path, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	port := &countingPort{File: f}

	// gpsd's capture of an MT3339 (testdata/gpsd/SOURCE.md), cut into the
	// bursts the receiver sent each second.
	capture, err := os.ReadFile("testdata/gpsd/mt3339.log")
	if err != nil {
		t.Fatal(err)
	}
	var bursts []string
	for _, l := range strings.Split(string(capture), "\n") {
		if strings.HasPrefix(l, "$GPGGA") { // GGA opens each of its cycles
			bursts = append(bursts, "")
		}
		if strings.HasPrefix(l, "$") && len(bursts) > 0 {
			bursts[len(bursts)-1] += strings.TrimRight(l, "\r") + "\r\n"
		}
	}
	const n = 4
	bursts = bursts[:n]

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fixes := make(chan int64, 16)
	done := make(chan error, 1)
	d := New(port, Options{
		Now:              func() time.Time { return time.Date(2015, 4, 14, 0, 0, 0, 0, time.UTC) },
		WatchdogInterval: 500 * time.Millisecond,
	})
	go func() {
		done <- d.Run(ctx, func(r kestrel.Record) {
			if _, ok := r.Body.(*kestrel.Position); ok {
				fixes <- r.Time
			}
		})
	}()

	// A silent second: the watchdog's read (no data after 500 ms) and
	// nothing else.
	time.Sleep(time.Second)
	silent := port.reads.Load()
	if silent > 2 {
		t.Errorf("%d reads in a silent second, want at most 2 (the first and the watchdog's)", silent)
	}
	// Bursts 300 ms apart, each in one write as a UART's FIFO hands them on.
	for i, b := range bursts {
		if _, err := m.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-fixes:
		case <-time.After(5 * time.Second):
			t.Fatalf("burst %d: no fix released", i)
		}
		time.Sleep(300 * time.Millisecond)
	}
	reads := port.reads.Load() - silent
	if reads > 3*n {
		t.Errorf("%d reads for %d bursts, want at most %d (the burst's, its release's, one spare)", reads, n, 3*n)
	}
	t.Logf("reads: %d in the silent second, %d for %d bursts", silent, reads, n)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}
