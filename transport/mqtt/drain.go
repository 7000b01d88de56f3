package mqtt

import (
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

var errLost = errors.New("connection lost")

// flight is one published, not yet acknowledged data message.
type flight struct {
	tok    paho.Token
	seqs   []uint64
	buf    []byte
	events bool
	ackBy  time.Time // PUBACK deadline: AckTimeout after the link carried it
}

// drainer moves records from the Outbox to one connection. It runs on a
// single goroutine, so batches, the window and the FIFO need no locks.
type drainer struct {
	s      *Session
	cl     paho.Client
	enc    wire.Encoder
	urgent UrgentTaker
	ready  <-chan struct{}

	teleTopic, evTopic string

	tele    []kestrel.Record // taken, waiting to close into a batch
	teleDue time.Time        // when the held batch must go: the earliest of its records' budgets
	ev      []kestrel.Record
	evDue   time.Time // likewise for the held high and emergency records
	scratch []kestrel.Record
	// backlog: a Take filled the batch, so the Outbox holds a backlog; the
	// partial batch at its end goes at once instead of waiting on a
	// live-traffic age. Cleared when that partial batch is out.
	backlog bool

	q       []*flight // FIFO: QoS 1 PUBACKs come back in order [MQTT-4.6.0-2]
	teleWin int       // telemetry messages in q
	spare   []*flight

	perRec  int  // running estimate of encoded bytes per record
	more    bool // the last Take filled the batch: the Outbox may hold more
	takeErr time.Time
}

func newDrainer(s *Session, cl paho.Client) *drainer {
	d := &drainer{
		s:         s,
		cl:        cl,
		teleTopic: wire.Topic(s.opts.Fleet, s.opts.Device, "telemetry"),
		evTopic:   wire.Topic(s.opts.Fleet, s.opts.Device, "events"),
		perRec:    24,
	}
	d.urgent, _ = s.out.(UrgentTaker)
	if n, ok := s.out.(Notifier); ok {
		d.ready = n.Ready()
	}
	return d
}

func (d *drainer) run(ctx context.Context, lost <-chan struct{}) error {
	o := &d.s.opts
	poll := o.Poll
	if d.ready != nil {
		poll *= 5
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if err := d.reap(); err != nil {
			return err
		}
		now := time.Now()
		d.fill(now)
		wake, err := d.flush(now)
		if err != nil {
			return err
		}
		if err := d.reap(); err != nil {
			return err
		}
		if d.progress(wake) {
			// More to do at once; still notice shutdown and loss.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-lost:
				return errLost
			default:
				continue
			}
		}
		var head <-chan struct{}
		if len(d.q) > 0 {
			head = d.q[0].tok.Done()
			ackBy := d.q[0].ackBy
			if !now.Before(ackBy) {
				return fmt.Errorf("puback: %w", ErrAckTimeout)
			}
			if wake.IsZero() || ackBy.Before(wake) {
				wake = ackBy
			}
		}
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lost:
			return errLost
		case <-head:
		case <-d.ready:
		case <-tick.C:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// progress says whether another round can send without waiting: the
// Outbox may hold more (the last Take was cut short by the batch size), the
// window has room and the pacer does not ask for a pause.
func (d *drainer) progress(wake time.Time) bool {
	return d.more && wake.IsZero() && d.teleWin < d.s.opts.InFlight
}

// batchCap is the number of records that closes a telemetry batch: the
// count limit, or the byte limit at the current bytes-per-record estimate.
func (d *drainer) batchCap() int {
	o := &d.s.opts
	n := o.BatchBytes / max(d.perRec, 1)
	return max(1, min(n, o.BatchMax))
}

// fill takes records from the Outbox into the held batches, as taken at
// now.
func (d *drainer) fill(now time.Time) {
	o := &d.s.opts
	for {
		room := d.batchCap() - len(d.tele)
		if room <= 0 {
			d.more = true
			if d.urgent != nil && d.teleWin >= o.InFlight {
				recs, err := d.urgent.TakeUrgent(d.scratch[:0], o.BatchMax)
				d.scratch = recs[:0]
				if err != nil {
					d.takeFailed(err)
					return
				}
				d.route(recs, now)
			}
			return
		}
		recs, err := d.s.out.Take(d.scratch[:0], room)
		d.scratch = recs[:0]
		if err != nil {
			d.more = false
			d.takeFailed(err)
			return
		}
		d.route(recs, now)
		d.more = len(recs) == room
		if d.more {
			d.backlog = true
		}
		if !d.more || len(d.ev) > 0 {
			return
		}
	}
}

func (d *drainer) takeFailed(err error) {
	if time.Since(d.takeErr) > time.Minute {
		d.takeErr = time.Now()
		d.s.log.Error("outbox take failed", "err", err)
	}
}

// route holds each record in its lane and brings the lane's deadline
// forward to the record's budget. Budgets count from when a record was
// taken, on the monotonic clock: record times are the receiver's (GPS) or
// a wall clock that may step, and an old or replayed fix must not defeat
// batching. now is the drain round's clock reading (the caller's, so that
// tests can step it).
func (d *drainer) route(recs []kestrel.Record, now time.Time) {
	o := &d.s.opts
	for i := range recs {
		r := &recs[i]
		switch {
		case r.Priority >= kestrel.PriorityEmergency:
			d.ev = append(d.ev, *r)
			d.evDue = now
		case r.Priority == kestrel.PriorityHigh:
			if len(d.ev) == 0 || now.Add(o.HighAge).Before(d.evDue) {
				d.evDue = now.Add(max(o.HighAge, 0))
			}
			d.ev = append(d.ev, *r)
		default:
			age := o.BatchAge
			if r.Priority == kestrel.PriorityBulk {
				age = o.BulkAge
			}
			due := now.Add(max(age, 0))
			if len(d.tele) == 0 || due.Before(d.teleDue) {
				d.teleDue = due
			}
			d.tele = append(d.tele, *r)
		}
	}
}

// flush publishes what is ready: all events, then telemetry batches while
// the window and the pacer allow. It returns when it next needs waking.
func (d *drainer) flush(now time.Time) (wake time.Time, err error) {
	o := &d.s.opts
	if len(d.ev) > 0 && now.Before(d.evDue) {
		wake = d.evDue
	}
	for len(d.ev) > 0 && !now.Before(d.evDue) {
		n, err := d.publish(d.ev[:min(len(d.ev), o.BatchMax)], true)
		if err != nil {
			return wake, err
		}
		d.ev = shift(d.ev, n)
	}
	for len(d.tele) > 0 && d.teleWin < o.InFlight {
		full := len(d.tele) >= d.batchCap()
		if !full && !d.backlog && now.Before(d.teleDue) {
			if wake.IsZero() || d.teleDue.Before(wake) {
				wake = d.teleDue
			}
			return wake, nil
		}
		if w := d.s.pace.wait(now); w > 0 {
			return now.Add(w), nil
		}
		n, err := d.publish(d.tele[:min(len(d.tele), d.batchCap())], false)
		if err != nil {
			return wake, err
		}
		d.tele = shift(d.tele, n)
		if !full {
			d.backlog = false // the tail of the backlog is out
		}
	}
	return wake, nil
}

func shift(rs []kestrel.Record, n int) []kestrel.Record {
	m := copy(rs, rs[n:])
	clear(rs[m:])
	return rs[:m]
}

// publish encodes a prefix of recs that fits BatchBytes into one message
// and publishes it without waiting. It returns how many records it took.
func (d *drainer) publish(recs []kestrel.Record, events bool) (int, error) {
	o := &d.s.opts
	f := d.newFlight()
	n := len(recs)
	var p []byte
	for {
		var err error
		p, err = d.enc.AppendBatch(f.buf[:0], o.Device, recs[:n])
		if err != nil {
			if n > 1 {
				n /= 2 // isolate the record the encoder refuses
				continue
			}
			// A record that can never be encoded would block the lane
			// for ever; drop it loudly rather than stall every other one.
			d.s.log.Error("record cannot be encoded: dropped", "seq", recs[0].Seq, "kind", recs[0].Kind().String(), "err", err)
			if cerr := d.s.out.Commit([]uint64{recs[0].Seq}); cerr != nil {
				d.s.log.Error("outbox commit failed", "err", cerr)
			}
			d.spare = append(d.spare, f)
			return 1, nil
		}
		if len(p) > o.BatchBytes && n > 1 {
			n = max(1, min(n-1, n*o.BatchBytes/len(p)*15/16))
			f.buf = p
			continue
		}
		break
	}
	f.buf = p
	d.perRec = (3*d.perRec + (len(p)+n-1)/n) / 4
	f.events = events
	for i := range recs[:n] {
		f.seqs = append(f.seqs, recs[i].Seq)
	}
	topic := d.teleTopic
	if events {
		topic = d.evTopic
	}
	now := time.Now()
	d.s.pace.spend(now, len(p)+len(topic)+4)
	f.ackBy = now
	if free := d.s.pace.freeAt(); free.After(now) {
		f.ackBy = free
	}
	f.ackBy = f.ackBy.Add(o.AckTimeout)
	f.tok = d.cl.Publish(topic, 1, false, p)
	d.q = append(d.q, f)
	if !events {
		d.teleWin++
	}
	return n, nil
}

func (d *drainer) newFlight() *flight {
	if k := len(d.spare); k > 0 {
		f := d.spare[k-1]
		d.spare = d.spare[:k-1]
		f.seqs = f.seqs[:0]
		f.tok = nil
		return f
	}
	return &flight{}
}

// reap commits every acknowledged message at the head of the FIFO. A
// failed token means the connection is gone.
func (d *drainer) reap() error {
	for len(d.q) > 0 {
		f := d.q[0]
		select {
		case <-f.tok.Done():
		default:
			return nil
		}
		if err := f.tok.Error(); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		d.commit(f)
		d.q[0] = nil
		d.q = d.q[1:]
		if !f.events {
			d.teleWin--
		}
		d.spare = append(d.spare, f)
	}
	return nil
}

func (d *drainer) commit(f *flight) {
	st := &d.s.stats
	if err := d.s.out.Commit(f.seqs); err != nil {
		d.s.log.Error("outbox commit failed", "records", len(f.seqs), "err", err)
	}
	st.Messages.Add(1)
	st.LastAck.Store(time.Now().UnixMilli())
	st.Records.Add(uint64(len(f.seqs)))
	st.Bytes.Add(uint64(len(f.buf)))
}

// settle waits up to d for outstanding PUBACKs, committing as they come.
func (d *drainer) settle(wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for len(d.q) > 0 {
		select {
		case <-d.q[0].tok.Done():
			if d.reap() != nil {
				return
			}
		case <-deadline.C:
			return
		}
	}
}

// releaseAll hands back everything not acknowledged: the connection is
// gone. Messages whose PUBACK did arrive are still committed.
func (d *drainer) releaseAll() {
	var seqs []uint64
	for _, f := range d.q {
		done := false
		select {
		case <-f.tok.Done():
			done = f.tok.Error() == nil
		default:
		}
		if done {
			d.commit(f)
			continue
		}
		seqs = append(seqs, f.seqs...)
	}
	d.q = nil
	d.teleWin = 0
	for _, r := range d.ev {
		seqs = append(seqs, r.Seq)
	}
	for _, r := range d.tele {
		seqs = append(seqs, r.Seq)
	}
	d.ev, d.tele = d.ev[:0], d.tele[:0]
	if len(seqs) > 0 {
		d.s.out.Release(seqs)
		d.s.stats.Released.Add(uint64(len(seqs)))
	}
}
