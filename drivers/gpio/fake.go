package gpio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fakeChip is a GPIO chip at the ioctl boundary that behaves as the
// kernel's gpiolib-cdev does: it validates requests as
// gpio_v2_line_flags_validate does, refuses lines already requested
// (EBUSY), applies active-low and bias to the levels it reports, queues
// edge events with per-request and per-line sequence numbers into a
// bounded buffer (dropping on overflow, as the kfifo does), and stamps
// them with CLOCK_REALTIME or CLOCK_MONOTONIC as requested. With
// noRealtime it acts as a pre-5.11 kernel that rejects the realtime flag.
type fakeChip struct {
	mu         sync.Mutex
	nlines     int
	driven     map[uint32]bool // physical level of driven lines
	owner      map[uint32]*fakeReq
	noRealtime bool
	opens      int
}

func newFakeChip(n int) *fakeChip {
	return &fakeChip{nlines: n, driven: map[uint32]bool{}, owner: map[uint32]*fakeReq{}}
}

type fakeOpen struct{ c *fakeChip }

func (o *fakeOpen) requestLines(req *unix.GPIOV2LineRequest) (lineHandle, error) {
	return o.c.request(req)
}
func (o *fakeOpen) Close() error { return nil }

type fakeLine struct {
	offset  uint32
	flags   uint64
	seq     uint32
	logical bool
}

type fakeReq struct {
	c      *fakeChip
	lines  []*fakeLine
	seq    uint32
	events chan unix.GPIOV2LineEvent
	done   chan struct{}
	once   sync.Once
}

func validFlags(f uint64) bool {
	if f&flagInput != 0 && f&flagOutput != 0 {
		return false
	}
	if f&(flagEdgeRising|flagEdgeFalling) != 0 && f&flagOutput != 0 {
		return false
	}
	if f&(flagEdgeRising|flagEdgeFalling) != 0 && f&flagInput == 0 {
		return false
	}
	if f&flagEventClockRealtime != 0 && f&flagEventClockHTE != 0 {
		return false
	}
	if f&(flagOpenDrain|flagOpenSource) != 0 && f&flagOutput == 0 {
		return false
	}
	b := 0
	for _, x := range []uint64{flagBiasPullUp, flagBiasPullDown, flagBiasDisabled} {
		if f&x != 0 {
			b++
		}
	}
	if b > 1 || (b > 0 && f&(flagInput|flagOutput) == 0) {
		return false
	}
	return f&flagUsed == 0 && f>>13 == 0
}

func (c *fakeChip) request(req *unix.GPIOV2LineRequest) (lineHandle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int(req.Num_lines)
	if n < 1 || n > linesMax || req.Config.Num_attrs > numAttrs {
		return nil, unix.EINVAL
	}
	r := &fakeReq{c: c, events: make(chan unix.GPIOV2LineEvent, 16*n), done: make(chan struct{})}
	seen := map[uint32]bool{}
	for i := range n {
		off := req.Offsets[i]
		if int(off) >= c.nlines || seen[off] {
			return nil, unix.EINVAL
		}
		seen[off] = true
		if c.owner[off] != nil {
			return nil, unix.EBUSY
		}
		f := req.Config.Flags
		for _, a := range req.Config.Attrs[:req.Config.Num_attrs] {
			if a.Attr.Id == unix.GPIO_V2_LINE_ATTR_ID_FLAGS && a.Mask&(1<<uint(i)) != 0 {
				f = a.Attr.Flags
			}
		}
		if !validFlags(f) || (c.noRealtime && f&flagEventClockRealtime != 0) {
			return nil, unix.EINVAL
		}
		r.lines = append(r.lines, &fakeLine{offset: off, flags: f})
	}
	for _, l := range r.lines {
		c.owner[l.offset] = r
		l.logical = c.logicalLocked(l)
	}
	req.Fd = int32(100 + c.opens)
	c.opens++
	return r, nil
}

// physicalLocked is the level on the pin: driven, or set by the bias.
func (c *fakeChip) physicalLocked(l *fakeLine) bool {
	if v, ok := c.driven[l.offset]; ok {
		return v
	}
	return l.flags&flagBiasPullUp != 0 // floating reads low unless pulled up
}

func (c *fakeChip) logicalLocked(l *fakeLine) bool {
	return c.physicalLocked(l) != (l.flags&flagActiveLow != 0)
}

// drive sets a pin's physical level at instant at, queueing an edge event
// if a requested line's logical level changes.
func (c *fakeChip) drive(off uint32, level bool, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.driven[off] = level
	r := c.owner[off]
	if r == nil {
		return
	}
	for _, l := range r.lines {
		if l.offset != off {
			continue
		}
		nl := c.logicalLocked(l)
		if nl == l.logical {
			return
		}
		l.logical = nl
		id := uint32(unix.GPIO_V2_LINE_EVENT_FALLING_EDGE)
		if nl {
			id = unix.GPIO_V2_LINE_EVENT_RISING_EDGE
			if l.flags&flagEdgeRising == 0 {
				return
			}
		} else if l.flags&flagEdgeFalling == 0 {
			return
		}
		ts := at.UnixNano()
		if l.flags&flagEventClockRealtime == 0 {
			ts = monoAt(at)
		}
		r.seq++
		l.seq++
		ev := unix.GPIOV2LineEvent{Timestamp_ns: uint64(ts), Id: id, Offset: off, Seqno: r.seq, Line_seqno: l.seq}
		select {
		case r.events <- ev:
		default: // kfifo full: the kernel drops the event
		}
	}
}

// monoAt is the CLOCK_MONOTONIC reading that corresponds to wall time at.
func monoAt(at time.Time) int64 {
	var m unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &m); err != nil {
		panic(err)
	}
	return m.Nano() - time.Since(at).Nanoseconds()
}

// unplug ends every request, as when the chip's driver is unbound.
func (c *fakeChip) unplug() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.owner {
		r.close()
	}
}

func (r *fakeReq) values(v *unix.GPIOV2LineValues) error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	select {
	case <-r.done:
		return unix.ENODEV
	default:
	}
	v.Bits = 0
	for i, l := range r.lines {
		if v.Mask&(1<<uint(i)) != 0 && l.logical {
			v.Bits |= 1 << uint(i)
		}
	}
	return nil
}

func (r *fakeReq) readEvents(buf []unix.GPIOV2LineEvent) (int, error) {
	if len(buf) == 0 {
		return 0, unix.EINVAL
	}
	select {
	case ev := <-r.events:
		buf[0] = ev
		n := 1
		for n < len(buf) {
			select {
			case ev := <-r.events:
				buf[n] = ev
				n++
			default:
				return n, nil
			}
		}
		return n, nil
	case <-r.done:
		return 0, fmt.Errorf("read line fd: %w", errors.New("file already closed"))
	}
}

func (r *fakeReq) close() {
	r.once.Do(func() {
		close(r.done)
		for _, l := range r.lines {
			if r.c.owner[l.offset] == r {
				delete(r.c.owner, l.offset)
			}
		}
	})
}

func (r *fakeReq) Close() error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	r.close()
	return nil
}

var (
	_ lineRequester = (*fakeOpen)(nil)
	_ lineHandle    = (*fakeReq)(nil)
)

// FakeChips is a set of GPIO chips faked at the ioctl boundary (the
// fakeChip above: gpiolib-cdev's validation, busy lines, active-low,
// edge events with sequence numbers and kernel timestamps), for tests
// outside this package that run the real driver, such as the agent's:
// Debian's kernel has no gpio-sim. Pass it as Options.Fake.
type FakeChips struct {
	chips map[string]*fakeChip
}

// NewFakeChips makes chips by name (e.g. "gpiochip0") with their line
// counts. Every line starts low.
func NewFakeChips(lines map[string]int) *FakeChips {
	f := &FakeChips{chips: map[string]*fakeChip{}}
	for name, n := range lines {
		f.chips[name] = newFakeChip(n)
	}
	return f
}

// Set drives a line's physical level now, as the wiring would; a
// requested line with that edge enabled gets an event.
func (f *FakeChips) Set(chip string, offset uint32, level bool) {
	if c := f.chips[chip]; c != nil {
		c.drive(offset, level, time.Now())
	}
}

func (f *FakeChips) open(path string) (lineRequester, error) {
	c := f.chips[filepath.Base(path)]
	if c == nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: unix.ENOENT}
	}
	return &fakeOpen{c}, nil
}
