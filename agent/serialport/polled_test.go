package serialport

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// receiverBursts splits a capture into the bursts a 1 Hz receiver sends:
// a burst is the sentences from one that carries a new UTC time to the
// next (GSA and GSV carry none and go with the cycle they are in).
func receiverBursts(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var bursts []string
	var cur strings.Builder
	last := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimRight(l, "\r")
		if !strings.HasPrefix(l, "$") {
			continue
		}
		f := strings.Split(l, ",")
		utc := ""
		switch {
		case strings.HasSuffix(f[0], "GGA"), strings.HasSuffix(f[0], "RMC"), strings.HasSuffix(f[0], "ZDA"):
			if len(f) > 1 {
				utc = f[1]
			}
		}
		if utc != "" && utc != last && cur.Len() > 0 {
			bursts = append(bursts, cur.String())
			cur.Reset()
		}
		if utc != "" {
			last = utc
		}
		cur.WriteString(l + "\r\n")
	}
	if cur.Len() > 0 {
		bursts = append(bursts, cur.String())
	}
	return bursts
}

// mt3339 is gpsd's capture of an Adafruit Ultimate GPS (MediaTek MT3339,
// 1 Hz; drivers/nmea/testdata/gpsd/SOURCE.md): four to seven sentences a
// second, sent back to back.
const mt3339 = "../../drivers/nmea/testdata/gpsd/mt3339.log"

func openPolledPTY(t *testing.T, timeout time.Duration) (*pty.PTY, *polledPort) {
	t.Helper()
	m, err := pty.Open()
	if err != nil {
		t.Skip("no pty:", err)
	}
	t.Cleanup(func() { m.Close() })
	p, err := openPolled(m.Path, 9600, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return m, p
}

// TestPolledBurstOneRead: a burst that has arrived is taken in one read, not
// one per sentence.
func TestPolledBurstOneRead(t *testing.T) {
	m, p := openPolledPTY(t, time.Second)
	var burst string
	for _, b := range receiverBursts(t, mt3339) {
		if strings.Count(b, "\n") > strings.Count(burst, "\n") {
			burst = b // the longest: GGA, GSA, three GSV, RMC, ZDA
		}
	}
	if _, err := m.Write([]byte(burst)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the pty's flush work run
	buf := make([]byte, 4096)
	n, err := p.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != burst {
		t.Fatalf("one read got %d of %d bytes (%d sentences)", n, len(burst), strings.Count(got, "\n"))
	}
}

// TestPolledTimeoutContract: without deadlines Read keeps go.bug.st/serial's
// contract (0, nil after the read timeout), which LineReader and Probe use.
func TestPolledTimeoutContract(t *testing.T) {
	_, p := openPolledPTY(t, 30*time.Millisecond)
	n, err := p.Read(make([]byte, 64))
	if n != 0 || err != nil {
		t.Fatalf("Read on a silent port = %d, %v; want 0, nil after the timeout", n, err)
	}
	lr := NewLineReader(p, 256)
	if _, err := lr.ReadLine(); !errors.Is(err, ErrNoLine) {
		t.Fatalf("ReadLine on a silent port: %v, want ErrNoLine", err)
	}
}

// TestPolledDeadline: once a reader sets deadlines it owns the timing: the
// zero deadline waits for data (no timeout wakeups on a silent port), a
// past one fails the read with os.ErrDeadlineExceeded, and Close releases
// a pending read.
func TestPolledDeadline(t *testing.T) {
	m, p := openPolledPTY(t, 10*time.Millisecond)
	if err := p.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 256)
		n, _ := p.Read(buf)
		got <- buf[:n]
	}()
	// Ten of the port's timeouts go by without the read returning.
	select {
	case b := <-got:
		t.Fatalf("read returned %q before any data", b)
	case <-time.After(100 * time.Millisecond):
	}
	m.Write([]byte("$GPZDA,202643.000,13,04,2015,,*57\r\n"))
	if b := <-got; !bytes.HasPrefix(b, []byte("$GPZDA")) {
		t.Fatalf("read %q", b)
	}

	p.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := p.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v", err)
	}

	p.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := p.Read(make([]byte, 8)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("pending read after Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestPolledLockedDeadline: the port Open returns (behind its lock file)
// passes deadlines on, so the NMEA and AT drivers take the poller path.
func TestPolledLockedDeadline(t *testing.T) {
	m, err := pty.Open()
	if err != nil {
		t.Skip("no pty:", err)
	}
	defer m.Close()
	p, err := Open(t.Context(), Config{Path: m.Path, Baud: 9600, LockDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d, ok := p.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		t.Fatal("the opened port has no SetReadDeadline")
	}
	if err := d.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	if _, err := p.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v", err)
	}
}
