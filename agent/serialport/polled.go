package serialport

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// polledPort reads and writes a serial port through Go's runtime poller:
// a non-blocking descriptor of its own (an *os.File), so that a read
// waiting for the receiver parks a goroutine in epoll instead of holding
// an OS thread in pselect6 with a timeout. go.bug.st/serial's read blocks
// its thread and wakes it at every timeout; each return then has to win
// the one P back (GOMAXPROCS=1), which costs the futex hand-offs and the
// sysmon polling that dominated the agent's wakeups (docs/benchmarks.md).
//
// The line itself (raw mode, speed, 8N1, no flow control, TIOCEXCL) is
// still set up by go.bug.st/serial, on a second descriptor opened after
// ours (TIOCEXCL would refuse a later open by a process without
// CAP_SYS_ADMIN); termios belongs to the tty, so both descriptors see it.
// That port is never read.
//
// Read keeps go.bug.st/serial's contract for readers that rely on it
// (LineReader, Probe): it returns 0, nil after the read timeout without
// data. A reader that calls SetReadDeadline (drivers/nmea, drivers/at)
// takes the timing over: from then on Read blocks until data, the
// deadline (os.ErrDeadlineExceeded), hang-up or Close, so an idle port
// costs no wakeups at all.
type polledPort struct {
	f        *os.File
	line     serial.Port
	timeout  atomic.Int64 // time.Duration; 0 waits for data
	explicit atomic.Bool  // SetReadDeadline was called
	once     sync.Once
	closeErr error
}

var _ Port = (*polledPort)(nil)

// openPolled opens dev at baud with reads through the poller (see
// polledPort) and the given read timeout.
func openPolled(dev string, baud int, timeout time.Duration) (*polledPort, error) {
	f, ferr := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	mode := &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit}
	line, err := serial.Open(dev, mode)
	if err != nil {
		// go.bug.st/serial's error (PortBusy, PermissionDenied,
		// InvalidSpeed...) says more than ours: callers look at it.
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("serialport: open %s at %d baud: %w", dev, baud, err)
	}
	if ferr != nil {
		line.Close()
		return nil, fmt.Errorf("serialport: open %s: %w", dev, ferr)
	}
	p := &polledPort{f: f, line: line}
	// A non-canonical tty read with VMIN 0 returns 0 bytes at once, which
	// os.File reports as io.EOF; go.bug.st/serial's raw mode sets VMIN 1,
	// and this makes sure.
	if err := p.control(func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return err
		}
		if t.Cc[unix.VMIN] == 1 && t.Cc[unix.VTIME] == 0 {
			return nil
		}
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		return unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}); err != nil {
		p.Close()
		return nil, fmt.Errorf("serialport: termios on %s: %w", dev, err)
	}
	p.timeout.Store(int64(timeout))
	return p, nil
}

func (p *polledPort) control(fn func(fd int) error) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Read reads what the port has received, up to len(b): a whole burst of
// sentences in one call when they are there.
func (p *polledPort) Read(b []byte) (int, error) {
	if p.explicit.Load() {
		return p.f.Read(b)
	}
	if d := time.Duration(p.timeout.Load()); d > 0 {
		_ = p.f.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = p.f.SetReadDeadline(time.Time{})
	}
	n, err := p.f.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) && !p.explicit.Load() {
		return n, nil // go.bug.st/serial's timeout: 0, nil
	}
	return n, err
}

func (p *polledPort) Write(b []byte) (int, error) { return p.f.Write(b) }

// SetReadDeadline gives the reader the timing, as on an *os.File: a read
// after t fails with os.ErrDeadlineExceeded; the zero time waits for data.
func (p *polledPort) SetReadDeadline(t time.Time) error {
	p.explicit.Store(true)
	return p.f.SetReadDeadline(t)
}

// SetReadTimeout is go.bug.st/serial's: Read returns 0, nil after d without
// data (0 or less: wait for data). It ends explicit deadlines.
func (p *polledPort) SetReadTimeout(d time.Duration) error {
	p.timeout.Store(int64(max(d, 0)))
	p.explicit.Store(false)
	return nil
}

// ResetInputBuffer drops what the tty has received but not yet read.
func (p *polledPort) ResetInputBuffer() error { return p.line.ResetInputBuffer() }

// Close closes both descriptors; a pending Read returns os.ErrClosed. Safe
// to call twice.
func (p *polledPort) Close() error {
	p.once.Do(func() {
		p.closeErr = errors.Join(p.f.Close(), p.line.Close())
	})
	return p.closeErr
}
