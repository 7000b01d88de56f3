package gpio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// LineConfig names one input line.
type LineConfig struct {
	Name      string // reported as Event.Name: "ignition", "blue_lights"
	Chip      string // device under the dev root: "gpiochip0"
	Offset    uint32 // line offset on the chip
	ActiveLow bool   // the input reads 0 when active (switch to ground)
	// Bias: "" (as is), "pull-up", "pull-down" or "disable".
	Bias string
	// Debounce overrides Options.Debounce for this line.
	Debounce time.Duration
}

// Options configure the inputs.
type Options struct {
	// Debounce is how long a line must hold a new level. Default 20 ms;
	// a negative value disables debouncing.
	Debounce time.Duration
	// Consumer is the label the kernel shows for the lines. Default "kestrel".
	Consumer string
	Logger   *slog.Logger
	// Now stamps the start-up levels (edges carry the kernel's time).
	Now func() time.Time

	// Fake, when set, stands in for the character devices (tests).
	Fake *FakeChips

	// open replaces the character device, for tests.
	open chipOpener
}

// Inputs is a set of GPIO input lines.
type Inputs struct {
	devRoot string
	lines   []LineConfig
	opts    Options
	log     *slog.Logger
}

// New prepares inputs; devRoot is normally "/dev".
func New(devRoot string, lines []LineConfig, opts Options) *Inputs {
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.Debounce < 0 {
		opts.Debounce = 0
	}
	if opts.Consumer == "" {
		opts.Consumer = "kestrel"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Fake != nil && opts.open == nil {
		opts.open = opts.Fake.open
	}
	if opts.open == nil {
		opts.open = openChardev
	}
	return &Inputs{devRoot: devRoot, lines: lines, opts: opts, log: opts.Logger.With("driver", "gpio")}
}

// edge is one kernel event, decoded.
type edge struct {
	line   int // index into Inputs.lines
	level  bool
	monoNS int64 // kernel timestamp, CLOCK_MONOTONIC
	wallNS int64 // the same instant as UTC ns
}

// chip is one open chip with its request.
type chip struct {
	path  string
	req   lineRequester
	h     lineHandle
	lines []int // Inputs.lines index, by position in the request
}

func biasFlags(b string) (uint64, error) {
	switch b {
	case "":
		return 0, nil
	case "pull-up":
		return flagBiasPullUp, nil
	case "pull-down":
		return flagBiasPullDown, nil
	case "disable":
		return flagBiasDisabled, nil
	}
	return 0, fmt.Errorf("gpio: unknown bias %q", b)
}

// request builds the GPIO_V2_GET_LINE_IOCTL argument for lines of one
// chip. Flags differing between lines (active-low, bias) go in attributes
// with a mask, as the uAPI asks.
func (g *Inputs) request(idx []int) (*unix.GPIOV2LineRequest, error) {
	if len(idx) > linesMax {
		return nil, fmt.Errorf("gpio: %d lines on one chip, the kernel takes %d", len(idx), linesMax)
	}
	var req unix.GPIOV2LineRequest
	copy(req.Consumer[:len(req.Consumer)-1], g.opts.Consumer)
	// Monotonic stamps (the default), not EVENT_CLOCK_REALTIME: debounce
	// must not be fooled when GPS or NTP steps the clock of a gateway
	// that booted without a real-time clock.
	base := flagInput | flagEdgeRising | flagEdgeFalling
	req.Config.Flags = base
	perFlags := map[uint64]uint64{} // flags → mask of lines needing them
	for i, li := range idx {
		lc := g.lines[li]
		req.Offsets[i] = lc.Offset
		f := base
		if lc.ActiveLow {
			f |= flagActiveLow
		}
		b, err := biasFlags(lc.Bias)
		if err != nil {
			return nil, err
		}
		f |= b
		if f != base {
			perFlags[f] |= 1 << uint(i)
		}
	}
	if len(perFlags) > numAttrs {
		return nil, fmt.Errorf("gpio: too many flag combinations on one chip (%d, max %d)", len(perFlags), numAttrs)
	}
	for f, mask := range perFlags {
		a := &req.Config.Attrs[req.Config.Num_attrs]
		a.Attr.Id = unix.GPIO_V2_LINE_ATTR_ID_FLAGS
		a.Attr.Flags = f
		a.Mask = mask
		req.Config.Num_attrs++
	}
	req.Num_lines = uint32(len(idx))
	req.Event_buffer_size = 0 // kernel default: 16 per line
	return &req, nil
}

// open requests the lines of every chip.
func (g *Inputs) open() ([]*chip, error) {
	byChip := map[string][]int{}
	var order []string
	for i, lc := range g.lines {
		if _, ok := byChip[lc.Chip]; !ok {
			order = append(order, lc.Chip)
		}
		byChip[lc.Chip] = append(byChip[lc.Chip], i)
	}
	var chips []*chip
	fail := func(err error) ([]*chip, error) {
		for _, c := range chips {
			c.close()
		}
		return nil, err
	}
	for _, name := range order {
		idx := byChip[name]
		path := filepath.Join(g.devRoot, name)
		rq, err := g.opts.open(path)
		if err != nil {
			return fail(fmt.Errorf("gpio: %w", err))
		}
		c := &chip{path: path, req: rq, lines: idx}
		chips = append(chips, c)
		req, err := g.request(idx)
		if err != nil {
			return fail(err)
		}
		h, err := rq.requestLines(req)
		if err != nil {
			return fail(fmt.Errorf("gpio: request lines on %s: %w", path, err))
		}
		c.h = h
	}
	return chips, nil
}

func (c *chip) close() {
	if c.h != nil {
		c.h.Close()
	}
	c.req.Close()
}

// monoNow reads CLOCK_MONOTONIC, the clock of the kernel's edge stamps.
func monoNow() int64 {
	var m unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m); err != nil {
		panic("gpio: CLOCK_MONOTONIC: " + err.Error()) // cannot fail on Linux
	}
	return m.Nano()
}

// monoToWall converts a CLOCK_MONOTONIC stamp to UTC ns by the offset
// between the clocks now, moments after the edge. The realtime read is
// bracketed by two monotonic reads and retried if preempted in between,
// so the offset is good to a few microseconds.
func monoToWall(mono int64) int64 {
	var r unix.Timespec
	best, bestOff := int64(-1), int64(0)
	for range 3 {
		m1 := monoNow()
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &r); err != nil {
			return time.Now().UnixNano()
		}
		m2 := monoNow()
		if w := m2 - m1; best < 0 || w < best {
			best, bestOff = w, r.Nano()-(m1+w/2)
		}
		if best < 20_000 {
			break
		}
	}
	return mono + bestOff
}

// lineState is one line's debouncer.
type lineState struct {
	reported bool
	raw      bool
	pending  bool
	since    int64 // UTC ns of the edge that began the pending change
	stableAt int64 // CLOCK_MONOTONIC ns when it may be reported
	debounce time.Duration
}

// Run reports the start levels, then changes, until ctx ends (returning
// nil) or a chip fails.
func (g *Inputs) Run(ctx context.Context, emit func(kestrel.Record)) error {
	if len(g.lines) == 0 {
		return errors.New("gpio: no lines configured")
	}
	chips, err := g.open()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		for _, c := range chips {
			c.close() // unblocks readers
		}
		wg.Wait()
	}()

	st := make([]lineState, len(g.lines))
	now := g.opts.Now()
	for _, c := range chips {
		var v unix.GPIOV2LineValues
		v.Mask = 1<<uint(len(c.lines)) - 1
		if len(c.lines) == 64 {
			v.Mask = ^uint64(0)
		}
		if err := c.h.values(&v); err != nil {
			return fmt.Errorf("gpio: read levels on %s: %w", c.path, err)
		}
		for i, li := range c.lines {
			lvl := v.Bits&(1<<uint(i)) != 0
			st[li] = lineState{reported: lvl, raw: lvl, debounce: g.opts.Debounce}
			if d := g.lines[li].Debounce; d > 0 {
				st[li].debounce = d
			}
			g.emit(emit, li, lvl, now.UnixNano(), kestrel.PriorityNormal, "initial")
		}
	}

	edges := make(chan edge, 64)
	errs := make(chan error, len(chips))
	for _, c := range chips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- g.read(ctx, c, edges)
		}()
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	onEdge := func(e edge) {
		s := &st[e.line]
		s.raw = e.level
		switch {
		case s.raw == s.reported:
			s.pending = false // a bounce that came back
		case s.debounce == 0:
			s.reported = s.raw
			g.emit(emit, e.line, s.raw, e.wallNS, kestrel.PriorityHigh, "")
		default:
			// Every edge restarts the wait, in kernel time, so a late
			// wake-up of this goroutine cannot turn a bounce into a change.
			s.pending, s.since, s.stableAt = true, e.wallNS, e.monoNS+int64(s.debounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case e := <-edges:
			onEdge(e)
		case <-timer.C:
			// Take every edge already read before judging stability.
			for drained := false; !drained; {
				select {
				case e := <-edges:
					onEdge(e)
				default:
					drained = true
				}
			}
		}
		now := monoNow()
		var next int64
		for i := range st {
			s := &st[i]
			if !s.pending {
				continue
			}
			if now >= s.stableAt {
				s.pending = false
				s.reported = s.raw
				g.emit(emit, i, s.raw, s.since, kestrel.PriorityHigh, "")
				continue
			}
			if next == 0 || s.stableAt < next {
				next = s.stableAt
			}
		}
		if next != 0 {
			timer.Reset(time.Duration(next - now))
		}
	}
}

func (g *Inputs) emit(emit func(kestrel.Record), li int, level bool, ns int64, p kestrel.Priority, text string) {
	v := int64(0)
	if level {
		v = 1
	}
	emit(kestrel.Record{
		Envelope: kestrel.Envelope{Time: ns / int64(time.Millisecond), Priority: p},
		Body:     &kestrel.Event{Type: kestrel.EventInput, Source: "gpio", Name: g.lines[li].Name, Value: v, Text: text},
	})
}

// read turns one chip's kernel events into edges.
func (g *Inputs) read(ctx context.Context, c *chip, out chan<- edge) error {
	buf := make([]unix.GPIOV2LineEvent, 16)
	byOffset := map[uint32]int{}
	for _, li := range c.lines {
		byOffset[g.lines[li].Offset] = li
	}
	var lastSeq uint32
	for {
		n, err := c.h.readEvents(buf)
		for _, ev := range buf[:n] {
			li, ok := byOffset[ev.Offset]
			if !ok {
				continue
			}
			if lastSeq != 0 && ev.Seqno != lastSeq+1 {
				g.log.Warn("GPIO events lost (kernel buffer overflow)", "chip", c.path, "missed", ev.Seqno-lastSeq-1)
			}
			lastSeq = ev.Seqno
			mono := int64(ev.Timestamp_ns)
			e := edge{line: li, level: ev.Id == unix.GPIO_V2_LINE_EVENT_RISING_EDGE, monoNS: mono, wallNS: monoToWall(mono)}
			select {
			case out <- e:
			case <-ctx.Done():
				return nil
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("gpio: read events on %s: %w", c.path, err)
		}
	}
}
