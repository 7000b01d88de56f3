package gpio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestUAPILayout checks the struct sizes against the sizes encoded in the
// kernel's ioctl numbers (_IOWR('\xB4', nr, struct ...)), so a wrong layout
// fails here rather than corrupting memory on a device.
func TestUAPILayout(t *testing.T) {
	size := func(ioctl uint) uintptr { return uintptr(ioctl>>16) & 0x3fff }
	cases := []struct {
		name      string
		got, want uintptr
	}{
		{"gpio_v2_line_request", unsafe.Sizeof(unix.GPIOV2LineRequest{}), size(unix.GPIO_V2_GET_LINE_IOCTL)},
		{"gpio_v2_line_values", unsafe.Sizeof(unix.GPIOV2LineValues{}), size(unix.GPIO_V2_LINE_GET_VALUES_IOCTL)},
		{"gpio_v2_line_info", unsafe.Sizeof(unix.GPIOV2LineInfo{}), size(unix.GPIO_V2_GET_LINEINFO_IOCTL)},
		{"gpio_v2_line_request (592)", unsafe.Sizeof(unix.GPIOV2LineRequest{}), 592},
		{"gpio_v2_line_config (272)", unsafe.Sizeof(unix.GPIOV2LineConfig{}), 272},
		{"gpio_v2_line_attribute (16)", unsafe.Sizeof(unix.GPIOV2LineAttribute{}), 16},
		{"gpio_v2_line_event (48)", unsafe.Sizeof(unix.GPIOV2LineEvent{}), 48},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
	if off := unsafe.Offsetof(unix.GPIOV2LineRequest{}.Fd); off != 588 {
		t.Errorf("gpio_v2_line_request.fd at %d, want 588", off)
	}
	if flagEventClockRealtime != 0x800 || flagActiveLow != 0x2 || flagEdgeFalling != 0x20 {
		t.Error("gpio_v2_line_flag values differ from linux/gpio.h")
	}
}

// backend is where the lines live: the kernel's gpio-sim, or the fake.
type backend struct {
	name    string
	devRoot string
	chips   [2]string
	open    chipOpener // nil: the real character device
	// drive sets a pin's physical level and returns the wall-clock window
	// in which the edge happened.
	drive func(chip int, off uint32, level bool) (time.Time, time.Time)
	// burst drives levels gap apart (a bounce, a glitch) and returns the
	// window of the last edge. The fake queues the whole burst at once, so
	// a stalled test goroutine on a loaded machine cannot stretch it.
	burst func(chip int, off uint32, levels []bool, gap time.Duration) (time.Time, time.Time)
}

func fakeBackend(t *testing.T) (backend, [2]*fakeChip) {
	chips := [2]*fakeChip{newFakeChip(32), newFakeChip(8)}
	b := backend{
		name:    "fake at the ioctl boundary",
		devRoot: "/dev",
		chips:   [2]string{"gpiochip0", "gpiochip1"},
		open: func(path string) (lineRequester, error) {
			switch filepath.Base(path) {
			case "gpiochip0":
				return &fakeOpen{chips[0]}, nil
			case "gpiochip1":
				return &fakeOpen{chips[1]}, nil
			}
			return nil, &os.PathError{Op: "open", Path: path, Err: unix.ENOENT}
		},
		drive: func(chip int, off uint32, level bool) (time.Time, time.Time) {
			at := time.Now()
			chips[chip].drive(off, level, at)
			return at, at
		},
		burst: func(chip int, off uint32, levels []bool, gap time.Duration) (time.Time, time.Time) {
			at := time.Now().Add(-time.Duration(len(levels)) * gap)
			for _, l := range levels {
				at = at.Add(gap)
				chips[chip].drive(off, l, at)
			}
			return at, at
		},
	}
	return b, chips
}

// simBackend sets up two gpio-sim banks through configfs
// (Documentation/admin-guide/gpio/gpio-sim.rst), loading the module if it
// can. It returns an error saying why when it cannot.
func simBackend(t *testing.T) (backend, error) {
	const cfg = "/sys/kernel/config"
	root := filepath.Join(cfg, "gpio-sim")
	if _, err := os.Stat(root); err != nil {
		if out, err := exec.Command("modprobe", "gpio-sim").CombinedOutput(); err != nil {
			return backend{}, fmt.Errorf("modprobe gpio-sim: %v: %s", err, strings.TrimSpace(string(out)))
		}
		if _, err := os.Stat(cfg); err == nil {
			_ = unix.Mount("configfs", cfg, "configfs", 0, "")
		}
		if _, err := os.Stat(root); err != nil {
			return backend{}, fmt.Errorf("gpio-sim loaded but %s missing: %v", root, err)
		}
	}
	dir := filepath.Join(root, fmt.Sprintf("kestrel-test-%d", os.Getpid()))
	write := func(p, v string) error { return os.WriteFile(p, []byte(v), 0o644) }
	if err := os.Mkdir(dir, 0o755); err != nil {
		return backend{}, fmt.Errorf("gpio-sim: %w", err)
	}
	banks := []string{filepath.Join(dir, "bank0"), filepath.Join(dir, "bank1")}
	t.Cleanup(func() {
		_ = write(filepath.Join(dir, "live"), "0")
		for _, b := range banks {
			_ = os.Remove(b)
		}
		_ = os.Remove(dir)
	})
	for i, b := range banks {
		if err := os.Mkdir(b, 0o755); err != nil {
			return backend{}, fmt.Errorf("gpio-sim: %w", err)
		}
		if err := write(filepath.Join(b, "num_lines"), []string{"32", "8"}[i]); err != nil {
			return backend{}, fmt.Errorf("gpio-sim: %w", err)
		}
	}
	if err := write(filepath.Join(dir, "live"), "1"); err != nil {
		return backend{}, fmt.Errorf("gpio-sim live: %w", err)
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return strings.TrimSpace(string(b)) }
	devName := read(filepath.Join(dir, "dev_name"))
	var chips [2]string
	for i, b := range banks {
		chips[i] = read(filepath.Join(b, "chip_name"))
	}
	if devName == "" || chips[0] == "" {
		return backend{}, errors.New("gpio-sim: no dev_name or chip_name")
	}
	drive := func(chip int, off uint32, level bool) (time.Time, time.Time) {
		pull := "pull-down"
		if level {
			pull = "pull-up"
		}
		p := fmt.Sprintf("/sys/devices/platform/%s/%s/sim_gpio%d/pull", devName, chips[chip], off)
		before := time.Now()
		if err := write(p, pull); err != nil {
			t.Errorf("gpio-sim drive: %v", err)
		}
		return before, time.Now()
	}
	return backend{
		name:    "gpio-sim " + devName,
		devRoot: "/dev",
		chips:   chips,
		drive:   drive,
		burst: func(chip int, off uint32, levels []bool, gap time.Duration) (b, a time.Time) {
			for i, l := range levels {
				if i > 0 {
					time.Sleep(gap)
				}
				b, a = drive(chip, off, l)
			}
			return b, a
		},
	}, nil
}

type collector struct {
	recs chan kestrel.Record
	stop func() error
}

func runInputs(t *testing.T, b backend, lines []LineConfig, opts Options) *collector {
	t.Helper()
	opts.open = b.open
	g := New(b.devRoot, lines, opts)
	c := &collector{recs: make(chan kestrel.Record, 256)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, func(r kestrel.Record) { c.recs <- r }) }()
	c.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(3 * time.Second):
			return errors.New("Run did not stop")
		}
	}
	return c
}

func (c *collector) next(t *testing.T, what string) (kestrel.Record, *kestrel.Event) {
	t.Helper()
	select {
	case r := <-c.recs:
		return r, r.Body.(*kestrel.Event)
	case <-time.After(3 * time.Second):
		t.Fatalf("no record: %s", what)
	}
	panic("unreachable")
}

func (c *collector) none(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case r := <-c.recs:
		t.Fatalf("unexpected record %+v", r.Body)
	case <-time.After(wait):
	}
}

// within checks a stamp against the window in which the edge was made. The
// kernel's monotonic stamp is converted to UTC by reading both clocks, so a
// millisecond of slack covers read jitter and rounding at a millisecond
// boundary.
func within(t *testing.T, what string, ms int64, before, after time.Time) {
	t.Helper()
	if ms < before.UnixMilli()-1 || ms > after.UnixMilli()+1 {
		t.Errorf("%s stamped %d, edge happened in [%d, %d]", what, ms, before.UnixMilli(), after.UnixMilli())
	}
}

func TestVehicleInputs(t *testing.T) {
	backends := []backend{}
	if os.Getuid() == 0 {
		if b, err := simBackend(t); err == nil {
			backends = append(backends, b)
		} else {
			t.Logf("gpio-sim not used: %v", err)
		}
	} else {
		t.Log("gpio-sim not used: not root")
	}
	fb, _ := fakeBackend(t)
	backends = append(backends, fb)
	for _, b := range backends {
		t.Run(strings.Fields(b.name)[0], func(t *testing.T) {
			t.Logf("backend: %s", b.name)
			vehicleScenario(t, b)
		})
	}
}

func vehicleScenario(t *testing.T, b backend) {
	lines := []LineConfig{
		{Name: "ignition", Chip: b.chips[0], Offset: 3},
		{Name: "blue_lights", Chip: b.chips[0], Offset: 5, ActiveLow: true},
		{Name: "siren", Chip: b.chips[1], Offset: 0},
	}
	b.drive(0, 5, true) // blue lights off: the active-low input idles high
	start := time.Now()
	c := runInputs(t, b, lines, Options{Debounce: 100 * time.Millisecond})
	initial := map[string]int64{}
	for range 3 {
		r, e := c.next(t, "initial level")
		if r.Priority != kestrel.PriorityNormal || e.Type != kestrel.EventInput || e.Source != "gpio" || e.Text != "initial" {
			t.Fatalf("initial record %+v %+v", r.Envelope, e)
		}
		within(t, "initial "+e.Name, r.Time, start, time.Now())
		initial[e.Name] = e.Value
	}
	if initial["ignition"] != 0 || initial["blue_lights"] != 0 || initial["siren"] != 0 || len(initial) != 3 {
		t.Fatalf("initial levels %v", initial)
	}

	// Ignition on.
	before, after := b.drive(0, 3, true)
	r, e := c.next(t, "ignition on")
	if e.Name != "ignition" || e.Value != 1 || r.Priority != kestrel.PriorityHigh {
		t.Fatalf("got %+v prio %v", e, r.Priority)
	}
	within(t, "ignition edge", r.Time, before, after)

	// Blue lights switched on through a bouncing relay contact: one
	// event, stamped with the edge that began the level now held.
	before, after = b.burst(0, 5, []bool{false, true, false}, time.Millisecond)
	r, e = c.next(t, "blue lights on")
	if e.Name != "blue_lights" || e.Value != 1 {
		t.Fatalf("got %+v", e)
	}
	within(t, "blue lights edge", r.Time, before, after)

	// A 2 ms glitch on the siren line is not a change.
	b.burst(1, 0, []bool{true, false}, 2*time.Millisecond)
	c.none(t, 250*time.Millisecond)

	before, after = b.drive(0, 3, false)
	r, e = c.next(t, "ignition off")
	if e.Name != "ignition" || e.Value != 0 {
		t.Fatalf("got %+v", e)
	}
	within(t, "ignition off edge", r.Time, before, after)
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestMonotonicStampsConverted(t *testing.T) {
	// A pre-5.11 kernel knows no realtime event clock; the driver must not
	// need it.
	b, chips := fakeBackend(t)
	chips[0].noRealtime = true
	c := runInputs(t, b, []LineConfig{{Name: "door", Chip: "gpiochip0", Offset: 1}}, Options{Debounce: -1})
	c.next(t, "initial")
	at := time.Now().Add(-40 * time.Millisecond) // the edge happened a while ago
	chips[0].drive(1, true, at)
	r, e := c.next(t, "door")
	if e.Value != 1 {
		t.Fatalf("got %+v", e)
	}
	if d := r.Time - at.UnixMilli(); d < -2 || d > 2 {
		t.Fatalf("converted stamp off by %d ms", d)
	}
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestBiasAndBusy(t *testing.T) {
	b, chips := fakeBackend(t)
	// Nothing connected: the pull-up makes the active-low door switch
	// read inactive, the pull-down keeps the ignition sense low.
	lines := []LineConfig{
		{Name: "door", Chip: "gpiochip0", Offset: 7, ActiveLow: true, Bias: "pull-up"},
		{Name: "ignition", Chip: "gpiochip0", Offset: 8, Bias: "pull-down"},
	}
	c := runInputs(t, b, lines, Options{})
	for range 2 {
		_, e := c.next(t, "initial")
		if e.Value != 0 {
			t.Fatalf("%s initial %d, want 0 from its bias", e.Name, e.Value)
		}
	}
	// A second owner of the same line is refused, as by the kernel.
	g := New("/dev", lines[:1], Options{open: b.open})
	err := g.Run(context.Background(), func(kestrel.Record) {})
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second request: %v, want EBUSY", err)
	}
	// The chip goes away: Run reports it.
	chips[0].unplug()
	select {
	case r := <-c.recs:
		t.Fatalf("record after unplug %+v", r.Body)
	case <-time.After(50 * time.Millisecond):
	}
	if err := c.stop(); err == nil {
		t.Log("Run returned nil after unplug and cancel") // stop raced with the read error
	}
}

func TestUnplugEndsRun(t *testing.T) {
	b, chips := fakeBackend(t)
	g := New("/dev", []LineConfig{{Name: "siren", Chip: "gpiochip1", Offset: 2}}, Options{open: b.open})
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background(), func(kestrel.Record) {}) }()
	time.Sleep(30 * time.Millisecond)
	chips[1].unplug()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "gpiochip1") {
			t.Fatalf("got %v, want an error naming the chip", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after unplug")
	}
}

func TestBadConfig(t *testing.T) {
	b, _ := fakeBackend(t)
	for _, lc := range []LineConfig{
		{Name: "x", Chip: "gpiochip1", Offset: 8},                   // beyond the chip
		{Name: "x", Chip: "gpiochip0", Offset: 1, Bias: "sideways"}, // unknown bias
		{Name: "x", Chip: "gpiochip9", Offset: 1},                   // no such chip
	} {
		g := New("/dev", []LineConfig{lc}, Options{open: b.open})
		if err := g.Run(context.Background(), func(kestrel.Record) {}); err == nil {
			t.Errorf("%+v accepted", lc)
		}
	}
	if err := New("/dev", nil, Options{}).Run(context.Background(), func(kestrel.Record) {}); err == nil {
		t.Error("no lines accepted")
	}
}
