// Package serialport opens the agent's serial devices (GPS receivers,
// radios) with go.bug.st/serial: it resolves /dev/serial/by-id links,
// detects the baud rate by listening for valid lines, keeps a port open
// across unplug and replug, and splits lines without tripping over the
// library's read timeouts.
package serialport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"time"

	"go.bug.st/serial"
)

// Port is an open serial port.
type Port interface {
	io.ReadWriteCloser
}

// Config says which port to open and how.
type Config struct {
	// Path of the device; symlinks such as /dev/serial/by-id/... are
	// resolved on every open, so a replugged receiver that comes back as
	// another ttyUSB is found again.
	Path string
	// Baud is the line speed; 0 detects it (see Bauds and Validate).
	Baud int
	// ReadTimeout makes Read return 0, nil after this long without data, so
	// that readers can run watchdogs (default 250 ms).
	ReadTimeout time.Duration
	// Bauds are tried in order when Baud is 0 (default 4800 to 115200,
	// most common GPS rates first).
	Bauds []int
	// Validate recognises a good line while detecting the baud rate
	// (default: an NMEA 0183 sentence with a valid checksum). Pass another
	// to detect the speed of an AT-command radio.
	Validate func(line []byte) bool
	// ProbeTime is how long each rate is listened to (default 1.5 s).
	ProbeTime time.Duration
	// MinBackoff and MaxBackoff bound the reopen delay in Supervise
	// (defaults 500 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// HealthyAfter: a port that ran this long before it was lost was
	// unplugged rather than flapping, and Supervise reopens it promptly:
	// the backoff restarts at MinBackoff and, for ReplugWindow after the
	// loss, no wait exceeds ReplugPoll (defaults 1 s, 2 min, 1 s). The
	// device node appearing ends a wait at once in any case.
	HealthyAfter, ReplugWindow, ReplugPoll time.Duration
	// LockDir holds the FHS lock files (LCK..ttyUSB0) that keep two
	// processes (the agent and `kestrel selftest`, say) off one port.
	// Default DefaultLockDir; "-" takes no lock file. The port is also
	// opened with TIOCEXCL, which keeps out other openers without
	// CAP_SYS_ADMIN.
	LockDir string
}

// DefaultBauds are the rates tried by detection.
var DefaultBauds = []int{9600, 4800, 38400, 115200, 19200, 57600}

// ErrNoBaud means no rate produced a valid line.
var ErrNoBaud = errors.New("serialport: no baud rate gave valid data")

func (c *Config) defaults() {
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 250 * time.Millisecond
	}
	if len(c.Bauds) == 0 {
		c.Bauds = DefaultBauds
	}
	if c.Validate == nil {
		c.Validate = ValidNMEA
	}
	if c.ProbeTime <= 0 {
		c.ProbeTime = 1500 * time.Millisecond
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.HealthyAfter <= 0 {
		c.HealthyAfter = time.Second
	}
	if c.ReplugWindow <= 0 {
		c.ReplugWindow = 2 * time.Minute
	}
	if c.ReplugPoll <= 0 {
		c.ReplugPoll = time.Second
	}
	switch c.LockDir {
	case "":
		c.LockDir = DefaultLockDir
	case "-":
		c.LockDir = ""
	}
}

// ValidNMEA reports whether line (without CR LF; leading noise allowed) ends
// in an NMEA sentence with a correct "*hh" checksum.
func ValidNMEA(line []byte) bool {
	i := bytes.LastIndexAny(line, "$!")
	if i < 0 {
		return false
	}
	s := bytes.TrimRight(line[i:], "\r\n")
	n := len(s)
	if n < 6 || s[n-3] != '*' {
		return false
	}
	var cs byte
	for _, c := range s[1 : n-3] {
		if c < 0x20 || c > 0x7e {
			return false
		}
		cs ^= c
	}
	const hex = "0123456789ABCDEF"
	up := func(c byte) byte {
		if c >= 'a' && c <= 'f' {
			return c - 32
		}
		return c
	}
	return up(s[n-2]) == hex[cs>>4] && up(s[n-1]) == hex[cs&15]
}

// Resolve follows symlinks (such as /dev/serial/by-id/usb-u-blox...) to the
// device node they point at now.
func Resolve(path string) (string, error) {
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("serialport: resolve %s: %w", path, err)
	}
	return p, nil
}

// Open opens the port, detecting the baud rate when cfg.Baud is 0. It
// first takes the port's lock file: a port that another live process holds
// is refused with ErrInUse before anything touches its line settings.
func Open(ctx context.Context, cfg Config) (Port, error) {
	cfg.defaults()
	dev, err := Resolve(cfg.Path)
	if err != nil {
		return nil, err
	}
	release, _, err := lock(cfg.LockDir, dev)
	if err != nil {
		return nil, err
	}
	var p Port
	if cfg.Baud > 0 {
		p, err = openAt(dev, cfg.Baud, cfg.ReadTimeout)
	} else {
		p, _, err = Detect(ctx, dev, cfg)
	}
	if err != nil {
		release()
		return nil, err
	}
	return &lockedPort{Port: p, release: release}, nil
}

func openAt(dev string, baud int, timeout time.Duration) (serial.Port, error) {
	p, err := serial.Open(dev, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("serialport: open %s at %d baud: %w", dev, baud, err)
	}
	if err := p.SetReadTimeout(timeout); err != nil {
		p.Close()
		return nil, fmt.Errorf("serialport: read timeout on %s: %w", dev, err)
	}
	return p, nil
}

// Detect hunts for the baud rate: at each rate in cfg.Bauds it listens for
// up to cfg.ProbeTime and accepts the rate once two lines pass
// cfg.Validate (one could be luck). The port is returned open at that rate.
func Detect(ctx context.Context, dev string, cfg Config) (Port, int, error) {
	cfg.defaults()
	for _, b := range cfg.Bauds {
		p, err := serial.Open(dev, &serial.Mode{BaudRate: b})
		if err != nil {
			return nil, 0, fmt.Errorf("serialport: open %s at %d baud: %w", dev, b, err)
		}
		if err := p.SetReadTimeout(50 * time.Millisecond); err != nil {
			p.Close()
			return nil, 0, fmt.Errorf("serialport: read timeout on %s: %w", dev, err)
		}
		_ = p.ResetInputBuffer() // drop bytes received at the old rate
		ok, err := Probe(ctx, p, cfg.Validate, cfg.ProbeTime, 2)
		if ok {
			if err := p.SetReadTimeout(cfg.ReadTimeout); err != nil {
				p.Close()
				return nil, 0, fmt.Errorf("serialport: read timeout on %s: %w", dev, err)
			}
			return p, b, nil
		}
		p.Close()
		if err != nil {
			return nil, 0, err
		}
	}
	return nil, 0, fmt.Errorf("%w on %s (tried %v)", ErrNoBaud, dev, cfg.Bauds)
}

// Probe reads lines from r for up to d and reports whether need of them
// passed valid. It is the reusable core of baud detection (an AT radio can
// pass a validator that accepts "OK"). r should time out its reads.
func Probe(ctx context.Context, r io.Reader, valid func([]byte) bool, d time.Duration, need int) (bool, error) {
	lr := NewLineReader(r, 256)
	deadline := time.Now().Add(d)
	good := 0
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		line, err := lr.ReadLine()
		if err != nil {
			if errors.Is(err, ErrNoLine) {
				continue
			}
			return false, fmt.Errorf("serialport: probe: %w", err)
		}
		if valid(line) {
			good++
			if good >= need {
				return true, nil
			}
		}
	}
	return false, nil
}

// ErrNoLine means the read timed out before a whole line arrived; the
// partial line is kept for the next call.
var ErrNoLine = errors.New("serialport: no complete line yet")

// LineReader splits a stream into lines. Unlike bufio.Scanner it survives
// reads that return 0, nil (go.bug.st/serial's timeout): ReadLine then
// returns ErrNoLine and can be called again. Lines longer than max are cut.
type LineReader struct {
	r       io.Reader
	buf     []byte
	start   int
	end     int
	max     int
	timeout int // consecutive empty reads before ErrNoLine
}

// NewLineReader makes a LineReader with lines of up to max bytes.
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = 4096
	}
	return &LineReader{r: r, buf: make([]byte, 2*max+512), max: max, timeout: 1}
}

// ReadLine returns the next line without its CR/LF. The slice is valid
// until the next call.
func (l *LineReader) ReadLine() ([]byte, error) {
	empty := 0
	for {
		// Look for a terminator in what is buffered.
		if i := bytes.IndexAny(l.buf[l.start:l.end], "\r\n"); i >= 0 {
			line := l.buf[l.start : l.start+i]
			l.start += i + 1
			if len(line) == 0 {
				continue // the LF of CR LF, or a blank line
			}
			return line, nil
		}
		if l.end-l.start >= l.max {
			line := l.buf[l.start : l.start+l.max]
			l.start += l.max
			return line, nil
		}
		if l.start > 0 {
			l.end = copy(l.buf, l.buf[l.start:l.end])
			l.start = 0
		}
		n, err := l.r.Read(l.buf[l.end:])
		l.end += n
		if err != nil {
			if n > 0 {
				continue
			}
			return nil, err
		}
		if n == 0 {
			empty++
			if empty >= l.timeout {
				return nil, ErrNoLine
			}
		}
	}
}

// Supervise keeps a port open across unplug and replug: it opens cfg
// (detecting the baud rate if asked), calls run with the port, and when run
// returns an error (EIO on unplug) or the port cannot be opened, closes it
// and tries again. It returns ctx.Err() when ctx is done, or run's error if
// run returns nil (run asked to stop).
//
// The reopen policy (docs/benchmarks.md, "USB unplug and replug"):
//   - Failed attempts back off exponentially with jitter, from MinBackoff
//     to MaxBackoff, so a broken port costs few wakeups and a fleet does
//     not retry in lockstep.
//   - A port that ran for HealthyAfter before it was lost was unplugged,
//     not flapping: the backoff starts again from MinBackoff, and for
//     ReplugWindow after the loss no wait is longer than ReplugPoll.
//   - While the device node is absent, each wait also watches (inotify)
//     the directory where it will appear (/dev, or /dev/serial/by-id for
//     a by-id path) and ends as soon as it is created, so a replugged
//     receiver is reopened at once without polling.
func Supervise(ctx context.Context, cfg Config, log *slog.Logger, run func(ctx context.Context, p io.ReadWriter) error) error {
	cfg.defaults()
	if log == nil {
		log = slog.Default()
	}
	backoff := cfg.MinBackoff
	var lostHealthy time.Time // when a port that had run HealthyAfter was lost
	lastErr := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := Open(ctx, cfg)
		absent := false
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			absent = errors.Is(err, fs.ErrNotExist)
			// The first failure of a kind is a warning; its repeats
			// (every ReplugPoll while a receiver stays unplugged) are not.
			level := slog.LevelWarn
			if err.Error() == lastErr {
				level = slog.LevelDebug
			}
			lastErr = err.Error()
			msg := "serial port not available, will retry"
			if errors.Is(err, ErrInUse) {
				msg, level = "serial port held by another process, will retry", slog.LevelError
			}
			log.Log(ctx, level, msg, "path", cfg.Path, "err", err, "backoff", backoff.Round(time.Millisecond))
		} else {
			lastErr = ""
			log.Info("serial port open", "path", cfg.Path)
			opened := time.Now()
			err = run(ctx, p)
			p.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				return nil
			}
			log.Warn("serial port lost, reopening", "path", cfg.Path, "err", err)
			if time.Since(opened) >= cfg.HealthyAfter {
				backoff = cfg.MinBackoff
				lostHealthy = time.Now()
			}
		}
		// Full jitter keeps a fleet from reopening in lockstep.
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		if !lostHealthy.IsZero() && time.Since(lostHealthy) < cfg.ReplugWindow {
			wait = min(wait, cfg.ReplugPoll)
		}
		appeared, err := waitAppear(ctx, cfg.Path, absent, wait)
		if err != nil {
			return err
		}
		if !appeared {
			backoff = min(backoff*2, cfg.MaxBackoff)
		}
	}
}

// sleep waits d, or until ctx ends (its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A go.bug.st/serial port is what Open returns.
var _ Port = serial.Port(nil)
