package serialport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
)

func track(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLineReaderSurvivesTimeouts(t *testing.T) {
	r := &chunky{parts: []string{"$GPG", "", "GA,1*", "", "00\r", "\n$X\n", "partial"}}
	lr := NewLineReader(r, 64)
	var got []string
	for i := 0; i < 20; i++ {
		l, err := lr.ReadLine()
		if errors.Is(err, ErrNoLine) {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(l))
	}
	if len(got) != 2 || got[0] != "$GPGGA,1*00" || got[1] != "$X" {
		t.Fatalf("lines %q", got)
	}
}

// chunky returns its parts one per Read; "" is a read timeout (0, nil).
type chunky struct{ parts []string }

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	s := c.parts[0]
	c.parts = c.parts[1:]
	return copy(p, s), nil
}

func TestValidNMEA(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"$GPZDA,193223.00,23,12,2007,00,00*69", true},
		{"\xff\x12$GPZDA,193223.00,23,12,2007,00,00*69", true},
		{"$GPZDA,193223.00,23,12,2007,00,00*6a", false},
		{"$GPZDA,193223.00,23,12,2007,00,00", false},
		{"OK", false},
	} {
		if ValidNMEA([]byte(c.s)) != c.ok {
			t.Errorf("ValidNMEA(%q) = %v", c.s, !c.ok)
		}
	}
}

// TestDetectBaud: the simulated receiver talks at 38400 and sends garbage
// at any other speed; detection must find 38400 through a by-id link.
func TestDetectBaud(t *testing.T) {
	dir := t.TempDir()
	sim, err := gpssim.New(gpssim.Config{Log: track(t), Baud: 38400, Speed: 0, Loop: true, Link: gpssim.LinkIn(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sim.Run(ctx) }()
	dev, err := Resolve(sim.Path())
	if err != nil {
		t.Fatal(err)
	}
	// The receiver writes as fast as the pty takes it, so once the test
	// stops reading it can be left blocked in a write to the master that
	// the slave's close does not always wake (nor does closing the
	// master): read the slave until it has seen ctx end.
	defer func() {
		cancel()
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
		drainUntil(t, dev, stopped)
	}()
	p, baud, err := Detect(ctx, dev, Config{ProbeTime: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if baud != 38400 {
		t.Fatalf("detected %d baud, want 38400", baud)
	}
	// And the port now yields valid sentences.
	ok, err := Probe(ctx, p, ValidNMEA, 2*time.Second, 5)
	if err != nil || !ok {
		t.Fatalf("no valid NMEA after detection: %v", err)
	}
}

// TestSuperviseUnplugReplug runs the NMEA driver under Supervise, unplugs
// the receiver and plugs it back as a new pty behind the same by-id link.
func TestSuperviseUnplugReplug(t *testing.T) {
	dir := t.TempDir()
	sim, err := gpssim.New(gpssim.Config{Log: track(t), Baud: 9600, Speed: 50, Loop: true, Link: gpssim.LinkIn(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	fixes := 0
	runs := 0
	states := []kestrel.GPSState{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sim.Run(ctx) }()
	supErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		supErr <- Supervise(ctx, Config{Path: sim.Path(), Baud: 9600, ReadTimeout: 100 * time.Millisecond,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
			slog.New(slog.NewTextHandler(io.Discard, nil)),
			func(ctx context.Context, p io.ReadWriter) error {
				mu.Lock()
				runs++
				mu.Unlock()
				d := nmea.New(p, nmea.Options{WatchdogInterval: 300 * time.Millisecond})
				return d.Run(ctx, func(r kestrel.Record) {
					mu.Lock()
					defer mu.Unlock()
					switch b := r.Body.(type) {
					case *kestrel.Position:
						if b.Mode >= kestrel.Fix2D {
							fixes++
						}
					case *kestrel.GPSStatus:
						states = append(states, b.State)
					}
				})
			})
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	get := func() (int, int) { mu.Lock(); defer mu.Unlock(); return fixes, runs }
	waitFor("first fixes", func() bool { f, _ := get(); return f >= 5 })
	if err := sim.Unplug(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	before, _ := get()
	if err := sim.Replug(); err != nil {
		t.Fatal(err)
	}
	waitFor("reopen", func() bool { _, r := get(); return r >= 2 })
	waitFor("fixes after replug", func() bool { f, _ := get(); return f >= before+5 })
	cancel()
	if err := <-supErr; !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Supervise returned %v", err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	sawFix := false
	for _, s := range states {
		sawFix = sawFix || s == kestrel.GPSFix
	}
	if !sawFix {
		t.Fatalf("no GPSFix state reported; states %v", states)
	}
}

// TestWatchdogNoData: a receiver that sends nothing is reported as no_data.
func TestWatchdogNoData(t *testing.T) {
	sim, err := gpssim.New(gpssim.Config{Log: []byte("$GPTXT,01,01,02,x*00\n"), Baud: 9600})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := Open(ctx, Config{Path: sim.Path(), Baud: 9600, ReadTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := make(chan kestrel.GPSState, 4)
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- nmea.New(p, nmea.Options{WatchdogInterval: 200 * time.Millisecond}).Run(rctx, func(r kestrel.Record) {
			if s, ok := r.Body.(*kestrel.GPSStatus); ok {
				select {
				case got <- s.State:
				default:
				}
			}
		})
	}()
	select {
	case s := <-got:
		if s != kestrel.GPSNoData {
			t.Fatalf("first state %v, want no_data", s)
		}
	case <-ctx.Done():
		t.Fatal("no status record from the watchdog")
	}
	rcancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

// drainUntil reads the tty at dev until done is closed, so that a writer
// on its master is not left blocked on a full buffer.
func drainUntil(t *testing.T, dev string, done <-chan struct{}) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		<-done
		return
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		select {
		case <-done:
			return
		default:
		}
		_ = f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = f.Read(buf)
	}
}

// TestSuperviseReopensEveryReplugPromptly: a receiver unplugged and
// replugged again and again, each time after running for a couple of
// seconds (a loose USB cable), is reopened within a second of every replug
// with the default policy. Backoff that carried over from one unplug to
// the next (it was reset only after MaxBackoff of good running) took 2 s,
// then 4 s, then 8 s.
func TestSuperviseReopensEveryReplugPromptly(t *testing.T) {
	if testing.Short() {
		t.Skip("unplug cycles take ~10 s")
	}
	dir := t.TempDir()
	sim, err := gpssim.New(gpssim.Config{Log: track(t), Baud: 9600, Speed: 20, Loop: true, Link: gpssim.LinkIn(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); sim.Run(ctx) }()
	opens := make(chan time.Time, 16)
	go func() {
		defer wg.Done()
		Supervise(ctx, Config{Path: sim.Path(), Baud: 9600}, slog.New(slog.NewTextHandler(io.Discard, nil)),
			func(ctx context.Context, p io.ReadWriter) error {
				opens <- time.Now()
				_, err := io.Copy(io.Discard, p)
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return err
			})
	}()
	next := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-opens:
			return at
		case <-ctx.Done():
			t.Fatalf("no reopen %s", what)
			return time.Time{}
		}
	}
	next("at start")
	for i := range 4 {
		time.Sleep(1500 * time.Millisecond) // the port runs, healthy
		if err := sim.Unplug(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // unplugged
		replugged := time.Now()
		if err := sim.Replug(); err != nil {
			t.Fatal(err)
		}
		took := next("after replug").Sub(replugged)
		t.Logf("replug %d: reopened after %v", i+1, took.Round(time.Millisecond))
		if took > time.Second {
			t.Fatalf("replug %d: reopened %v after the device came back, want within 1 s", i+1, took.Round(time.Millisecond))
		}
	}
}

// TestSuperviseBacksOffFlappingPort: a port that opens but fails at once
// (a broken receiver) is retried with growing backoff, not in a loop.
func TestSuperviseBacksOffFlappingPort(t *testing.T) {
	dir := t.TempDir()
	sim, err := gpssim.New(gpssim.Config{Log: track(t), Baud: 9600, Speed: 0, Link: gpssim.LinkIn(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	opens := 0
	Supervise(ctx, Config{Path: sim.Path(), Baud: 9600, MinBackoff: 100 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(ctx context.Context, p io.ReadWriter) error { opens++; return errors.New("broken") })
	// 100 ms doubling with full jitter: at most 0.1+0.2+0.4+0.8+1.6 s of
	// waits fit in 3 s, at least half of each.
	if opens < 3 || opens > 7 {
		t.Fatalf("%d opens in 3 s of a port that fails at once, want 3 to 7 (backoff)", opens)
	}
}
