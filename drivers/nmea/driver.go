package nmea

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Driver reads NMEA from an already open port and emits kestrel records:
// one *kestrel.Position per fix (Envelope.Time is the fix time), and a
// *kestrel.GPSStatus plus an EventGPSState event whenever the receiver's
// state (no data, no fix, fix) changes, with the status repeated as a
// heartbeat.
//
// The driver never opens or closes the port. For the watchdog to fire while
// the receiver is silent, reads must return now and then: a port with
// SetReadDeadline (os.File, ptys) gets a deadline
// at the next thing due (the held fix's release, the watchdog, the
// heartbeat), so that data, not a tick, wakes the reader: one read per
// receiver burst. go.bug.st/serial ports should be given a read timeout
// (they then return 0, nil). A reader that blocks forever is only checked
// when data arrives.
type Driver struct {
	r    io.Reader
	opts Options
	dec  *Decoder
	now  func() time.Time
}

// nextDue is when the read loop next has something to do without data:
// release the held fix after a quiet gap, fire the watchdog, send the
// heartbeat. Times already past were handled by the loop and are skipped;
// it is never later than maxWait from now.
func (d *Driver) nextDue(now, start, lastData, lastValid, lastStatus time.Time, state kestrel.GPSState) time.Time {
	due := now.Add(maxWait)
	soonest := func(t time.Time) {
		if t.After(now) && t.Before(due) {
			due = t
		}
	}
	if d.dec.Pending() {
		soonest(lastData.Add(quietFlush))
	}
	if !lastValid.IsZero() {
		soonest(lastValid.Add(d.opts.WatchdogInterval))
	} else if state == stateUnknown {
		soonest(start.Add(d.opts.WatchdogInterval))
	}
	if state != stateUnknown && d.opts.Heartbeat > 0 {
		soonest(lastStatus.Add(d.opts.Heartbeat))
	}
	return due
}

// maxWait bounds one read on a port with deadlines.
const maxWait = 5 * time.Second

// quietFlush is the inter-character gap that marks the end of a receiver
// cycle (gpsd uses 0.25 s of a 1 s cycle); the held fix is released then.
const quietFlush = 150 * time.Millisecond

// New makes a driver for r. Options.Now defaults to the system clock, so
// that undated sentences are dated and GPS week rollover is repaired.
func New(r io.Reader, opts Options) *Driver {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WatchdogInterval <= 0 {
		opts.WatchdogInterval = 5 * time.Second
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Minute
	}
	return &Driver{r: r, opts: opts, dec: NewDecoder(opts), now: opts.Now}
}

// Decoder gives access to the driver's decoder (counters, status).
func (d *Driver) Decoder() *Decoder { return d.dec }

type deadliner interface {
	SetReadDeadline(time.Time) error
}

const stateUnknown = kestrel.GPSState(255)

// Run reads until ctx is done (returning ctx.Err()) or the port fails
// (returning the read error wrapped; io.EOF when the port hung up).
func (d *Driver) Run(ctx context.Context, emit func(kestrel.Record)) error {
	buf := make([]byte, 4096)
	dl, hasDeadline := d.r.(deadliner)
	state := stateUnknown
	// Intervals use the monotonic clock; d.now (Options.Now) only dates
	// the records.
	start := time.Now()
	lastValid := time.Time{}
	lastData := start
	lastStatus := start
	lastSentences := uint64(0)

	sendStatus := func(now time.Time, changed bool) {
		stamp := d.now().UnixMilli()
		st := d.dec.Status()
		st.State = state
		if state == kestrel.GPSNoData {
			st.Mode = kestrel.FixNone
		}
		emit(kestrel.Record{
			Envelope: kestrel.Envelope{Time: stamp, Priority: kestrel.PriorityNormal},
			Body:     &st,
		})
		if changed {
			emit(kestrel.Record{
				Envelope: kestrel.Envelope{Time: stamp, Priority: kestrel.PriorityNormal},
				Body: &kestrel.Event{Type: kestrel.EventGPSState, Source: "gps",
					Name: "nmea", Text: state.String()},
			})
		}
		lastStatus = now
	}
	emitFix := func(f Fix) {
		p := f.Pos
		emit(kestrel.Record{
			Envelope: kestrel.Envelope{Time: f.Time, Priority: kestrel.PriorityNormal},
			Body:     &p,
		})
	}

	if hasDeadline {
		// A cancelled ctx releases the pending read at once.
		stop := context.AfterFunc(ctx, func() { _ = dl.SetReadDeadline(time.Now()) })
		defer stop()
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if hasDeadline {
			// Wake only when something is due: the held fix's flush, the
			// watchdog, the heartbeat. Data wakes the read before that,
			// so a receiver's burst costs one wakeup, not one per tick.
			// Errors here only mean the port cannot time out; carry on.
			_ = dl.SetReadDeadline(d.nextDue(time.Now(), start, lastData, lastValid, lastStatus, state))
			if err := ctx.Err(); err != nil {
				return err // cancelled between the check and the deadline
			}
		}
		n, err := d.r.Read(buf)
		now := time.Now()
		if n > 0 {
			lastData = now
			d.dec.Write(buf[:n])
			for f, ok := d.dec.Next(); ok; f, ok = d.dec.Next() {
				emitFix(f)
			}
			if s := d.dec.Stats().Sentences; s != lastSentences {
				lastSentences = s
				lastValid = now
			}
		} else if d.dec.Pending() && now.Sub(lastData) >= quietFlush {
			for f, ok := d.dec.Release(); ok; f, ok = d.dec.Release() {
				emitFix(f)
			}
		}

		// Watchdog and state.
		next := state
		switch {
		case !lastValid.IsZero() && now.Sub(lastValid) < d.opts.WatchdogInterval:
			next = d.dec.Status().State
		case now.Sub(start) >= d.opts.WatchdogInterval || !lastValid.IsZero():
			next = kestrel.GPSNoData
		}
		if next != state {
			state = next
			sendStatus(now, true)
		} else if state != stateUnknown && d.opts.Heartbeat > 0 && now.Sub(lastStatus) >= d.opts.Heartbeat {
			sendStatus(now, false)
		}

		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			for f, ok := d.dec.Flush(); ok; f, ok = d.dec.Flush() {
				emitFix(f)
			}
			return fmt.Errorf("nmea: read: %w", err)
		}
	}
}
