// Package gpssim simulates a GPS receiver on a pseudo-terminal: it replays
// an NMEA log at real or accelerated speed, sends garbage while the line
// speed the code under test set differs from the receiver's (as a real UART
// would), and can be unplugged and replugged. A symlink stands in for the
// /dev/serial/by-id path, re-pointed at the new pty on replug as udev does.
package gpssim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// Config describes the simulated receiver.
type Config struct {
	// Log is the NMEA to replay, one sentence per line; '#' lines are
	// skipped.
	Log []byte
	// Baud is the receiver's fixed line speed (default 9600).
	Baud int
	// Speed scales time: 1 replays a cycle per second, 10 ten times
	// faster; 0 sends as fast as the reader takes it.
	Speed float64
	// Loop replays the log forever.
	Loop bool
	// Link is the symlink to create (e.g. dir/usb-u-blox_GNSS-if00); empty
	// means no link.
	Link string
}

// Sim is a running simulated receiver.
type Sim struct {
	cfg   Config
	lines [][]byte

	mu      sync.Mutex
	p       *pty.PTY
	plugged chan struct{} // closed while plugged in
	sent    int
}

// New plugs in a receiver.
func New(cfg Config) (*Sim, error) {
	if cfg.Baud == 0 {
		cfg.Baud = 9600
	}
	s := &Sim{cfg: cfg}
	for _, l := range bytes.Split(cfg.Log, []byte("\n")) {
		l = bytes.TrimRight(l, "\r")
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		s.lines = append(s.lines, append(l, '\r', '\n'))
	}
	if len(s.lines) == 0 {
		return nil, errors.New("gpssim: empty log")
	}
	if err := s.Replug(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is where the code under test opens the receiver: the link if one
// was asked for, else the pty's own path.
func (s *Sim) Path() string {
	if s.cfg.Link != "" {
		return s.cfg.Link
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return ""
	}
	return s.p.Path
}

// Sent counts lines written at the right speed.
func (s *Sim) Sent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// Unplug hangs up the pty (the reader gets EIO) and removes the link.
func (s *Sim) Unplug() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		return nil
	}
	err := s.p.Close()
	s.p = nil
	if s.cfg.Link != "" {
		if rerr := os.Remove(s.cfg.Link); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// Replug makes a fresh pty and points the link at it.
func (s *Sim) Replug() error {
	p, err := pty.Open()
	if err != nil {
		return fmt.Errorf("gpssim: %w", err)
	}
	if s.cfg.Link != "" {
		tmp := s.cfg.Link + ".new"
		_ = os.Remove(tmp)
		if err := os.Symlink(p.Path, tmp); err != nil {
			p.Close()
			return fmt.Errorf("gpssim: link: %w", err)
		}
		if err := os.Rename(tmp, s.cfg.Link); err != nil {
			p.Close()
			return fmt.Errorf("gpssim: link: %w", err)
		}
	}
	s.mu.Lock()
	old := s.p
	s.p = p
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close unplugs for good.
func (s *Sim) Close() error { return s.Unplug() }

// garble turns a line into what a UART at the wrong speed delivers: the
// same number of bytes, none of them forming a sentence.
func garble(line []byte, out []byte) []byte {
	out = out[:0]
	for i, c := range line {
		out = append(out, (c^0x5a)|0x80|byte(i&1))
	}
	return out
}

// Run replays the log until ctx is done (or the log ends, without Loop).
// Lines sent while unplugged are lost. When ctx ends the receiver is
// unplugged too: that also frees a write blocked on a pty nobody reads.
func (s *Sim) Run(ctx context.Context) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			s.Unplug()
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	var junk []byte
	var last []byte
	var cycle time.Duration
	if s.cfg.Speed > 0 {
		cycle = time.Duration(float64(time.Second) / s.cfg.Speed)
	}
	for {
		for i, l := range s.lines {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A new cycle begins at each RMC or GGA after the first line.
			ts := timeOf(l)
			newCycle := ts != nil && last != nil && !bytes.Equal(ts, last)
			if ts != nil {
				last = ts
			}
			if cycle > 0 && i > 0 && newCycle {
				t := time.NewTimer(cycle)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
			s.mu.Lock()
			p := s.p
			s.mu.Unlock()
			if p == nil {
				// Unplugged: the line is lost, as on a real cable.
				if cycle == 0 {
					time.Sleep(time.Millisecond)
				}
				continue
			}
			out := l
			baud, err := p.Baud()
			if err != nil || baud != s.cfg.Baud {
				junk = garble(l, junk)
				out = junk
			}
			if _, err := p.Write(out); err != nil {
				continue // hung up under us
			}
			if &out[0] == &l[0] {
				s.mu.Lock()
				s.sent++
				s.mu.Unlock()
			}
		}
		if !s.cfg.Loop {
			return nil
		}
	}
}

// timeOf returns the hhmmss of an RMC or GGA line: a new value starts a
// receiver cycle.
func timeOf(l []byte) []byte {
	if len(l) < 14 || (string(l[3:6]) != "RMC" && string(l[3:6]) != "GGA") {
		return nil
	}
	f := l[7:]
	if i := bytes.IndexByte(f, ','); i >= 6 {
		return f[:6]
	}
	return nil
}

// LinkIn returns a by-id style link path inside dir.
func LinkIn(dir string) string {
	return filepath.Join(dir, "usb-u-blox_AG_-_www.u-blox.com_u-blox_GNSS_receiver-if00")
}
