package linkfault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// Receiver plays a GPS receiver on the gadget side of a USB serial link
// (/dev/ttyGS0): it writes an NMEA log one receiver cycle (one fix: its
// RMC and GGA) at a time, at a rate the test sets, looping. It is
// powered by the bus, as a USB receiver is: SetRate(0) while unplugged. A
// cycle the link has no room for is counted as dropped (the receiver has
// moved on to the next fix), and a port hung up by the host's unplug is
// reopened.
type Receiver struct {
	path   string
	cycles [][]byte

	mu      sync.Mutex
	rate    float64 // cycles per second; 0 paused
	rateCh  chan struct{}
	fd      int
	next    int
	sent    int
	dropped int
}

// NewReceiver splits log into cycles: a cycle starts at each sentence
// whose UTC time field differs from the previous sentence's.
func NewReceiver(path string, log []byte) (*Receiver, error) {
	r := &Receiver{path: path, fd: -1, rateCh: make(chan struct{}, 1)}
	var cur []byte
	var last []byte
	for _, l := range bytes.Split(log, []byte("\n")) {
		l = bytes.TrimRight(l, "\r")
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		f := bytes.Split(l, []byte(","))
		if len(f) < 2 {
			continue
		}
		if cur != nil && !bytes.Equal(f[1], last) {
			r.cycles = append(r.cycles, cur)
			cur = nil
		}
		last = append(last[:0], f[1]...)
		cur = append(append(cur, l...), '\r', '\n')
	}
	if cur != nil {
		r.cycles = append(r.cycles, cur)
	}
	if len(r.cycles) == 0 {
		return nil, errors.New("receiver: no NMEA cycles in the log")
	}
	return r, nil
}

// SetRate sets the cycles per second; 0 pauses (the receiver is off).
func (r *Receiver) SetRate(perSecond float64) {
	r.mu.Lock()
	r.rate = perSecond
	if perSecond == 0 && r.fd >= 0 {
		// Powered off: what it had not sent is gone with it.
		unix.Close(r.fd)
		r.fd = -1
	}
	r.mu.Unlock()
	select {
	case r.rateCh <- struct{}{}:
	default:
	}
}

// Counts returns the cycles written whole and the cycles dropped.
func (r *Receiver) Counts() (sent, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, r.dropped
}

// Run writes cycles until ctx ends. It paces by the clock, not by ticks
// (a tick late under emulation is made up at the next), and writes the
// first cycle as soon as the rate is set: a receiver powered up by a
// replug has a fix to send at once.
func (r *Receiver) Run(ctx context.Context) error {
	defer func() {
		r.mu.Lock()
		if r.fd >= 0 {
			unix.Close(r.fd)
			r.fd = -1
		}
		r.mu.Unlock()
	}()
	const tick = 10 * time.Millisecond
	var (
		t       *time.Ticker
		tc      <-chan time.Time
		rate    float64
		since   time.Time
		written int
	)
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.rateCh:
			r.mu.Lock()
			rate = r.rate
			r.mu.Unlock()
			since, written = time.Now(), 0
			if t == nil && rate > 0 {
				t = time.NewTicker(tick)
				tc = t.C
			} else if t != nil && rate == 0 {
				t.Stop()
				t, tc = nil, nil
			}
		case <-tc:
		}
		if rate == 0 {
			continue
		}
		due := int(time.Since(since).Seconds()*rate) + 1 - written
		for range min(due, 10) {
			r.writeCycle()
			written++
		}
	}
}

func (r *Receiver) writeCycle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rate == 0 {
		return
	}
	c := r.cycles[r.next%len(r.cycles)]
	r.next++
	if r.fd < 0 {
		fd, err := openRaw(r.path)
		if err != nil {
			r.dropped++
			return
		}
		r.fd = fd
	}
	n, err := unix.Write(r.fd, c)
	if errors.Is(err, unix.EAGAIN) {
		r.dropped++ // no room: the host is not reading
		return
	}
	// A cycle begun is finished (a torn one would be the receiver's
	// fault, not the link's), waiting up to 100 ms for room.
	for deadline := time.Now().Add(100 * time.Millisecond); err == nil && n < len(c) && time.Now().Before(deadline); {
		unix.Poll([]unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLOUT}}, 10)
		var m int
		m, err = unix.Write(r.fd, c[n:])
		if errors.Is(err, unix.EAGAIN) {
			m, err = 0, nil
		}
		n += m
	}
	switch {
	case err == nil && n == len(c):
		r.sent++
	case err == nil:
		r.dropped++ // torn: the host stopped reading
	default: // EIO: hung up by an unplug
		r.dropped++
		unix.Close(r.fd)
		r.fd = -1
	}
}

// openRaw opens a tty non-blocking in raw mode (cfmakeraw(3)): no echo of
// what the host sends, no CR/LF translation.
func openRaw(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	if err := pty.MakeRaw(fd); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	return fd, nil
}
