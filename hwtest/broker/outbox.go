package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel"
)

// Outbox is an in-memory stand-in for the agent's spool, with the
// behaviour a transport relies on: records go out emergency first, then
// high, then live normal records newest first, then the normal backlog
// oldest first, then bulk oldest first. Taken records are in flight until
// committed (gone for good) or released (back in their lane). It is a
// Notifier (Ready) and an UrgentTaker (TakeUrgent) for transport/mqtt.
//
// "Live" means added less than Live ago (zero: nothing is live, the whole
// normal lane drains oldest first).
type Outbox struct {
	Live time.Duration

	mu        sync.Mutex
	lanes     [5]seqHeap // emergency, high, live (newest first), normal, bulk
	recs      map[uint64]*entry
	inflight  int               // entries of recs in flight
	committed map[uint64]uint64 // seqs ever committed: bit s%64 of word s/64
	nCommit   int               // distinct seqs in committed
	badOps    []string
	ready     chan struct{}
	empty     chan struct{} // closed when nothing is queued or in flight
}

type entry struct {
	r        kestrel.Record
	added    time.Time
	inflight bool
}

const (
	laneEmergency = iota
	laneHigh
	laneLive
	laneNormal
	laneBulk
)

// NewOutbox returns an empty Outbox.
func NewOutbox() *Outbox {
	o := &Outbox{
		recs:      make(map[uint64]*entry),
		committed: make(map[uint64]uint64),
		ready:     make(chan struct{}, 1),
		empty:     make(chan struct{}),
	}
	close(o.empty)
	o.lanes[laneLive].newest = true
	return o
}

// Add queues records. Seqs must be unique.
func (o *Outbox) Add(recs ...kestrel.Record) {
	now := time.Now()
	o.mu.Lock()
	if len(o.recs) == 0 && len(recs) > 0 {
		o.empty = make(chan struct{})
	}
	for _, r := range recs {
		if _, dup := o.recs[r.Seq]; dup {
			o.badOps = append(o.badOps, fmt.Sprintf("add: seq %d already queued", r.Seq))
			continue
		}
		o.recs[r.Seq] = &entry{r: r, added: now}
		o.lanes[o.laneOf(r, now, now)].push(r.Seq)
	}
	o.mu.Unlock()
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

func (o *Outbox) laneOf(r kestrel.Record, added, now time.Time) int {
	switch {
	case r.Priority >= kestrel.PriorityEmergency:
		return laneEmergency
	case r.Priority == kestrel.PriorityHigh:
		return laneHigh
	case r.Priority == kestrel.PriorityNormal && o.Live > 0 && now.Sub(added) < o.Live:
		return laneLive
	case r.Priority == kestrel.PriorityNormal:
		return laneNormal
	}
	return laneBulk
}

// Take implements transport/mqtt.Outbox.
func (o *Outbox) Take(dst []kestrel.Record, max int) ([]kestrel.Record, error) {
	return o.take(dst, max, laneBulk)
}

// TakeUrgent implements transport/mqtt.UrgentTaker.
func (o *Outbox) TakeUrgent(dst []kestrel.Record, max int) ([]kestrel.Record, error) {
	return o.take(dst, max, laneHigh)
}

func (o *Outbox) take(dst []kestrel.Record, max, last int) ([]kestrel.Record, error) {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for l := 0; l <= last && n < max; l++ {
		h := &o.lanes[l]
		for h.Len() > 0 && n < max {
			seq := h.pop()
			e := o.recs[seq]
			if l == laneLive && now.Sub(e.added) >= o.Live {
				// The newest is no longer live, so none of the rest is.
				o.lanes[laneNormal].push(seq)
				for h.Len() > 0 {
					o.lanes[laneNormal].push(h.pop())
				}
				break
			}
			e.inflight = true
			o.inflight++
			dst = append(dst, e.r)
			n++
		}
	}
	return dst, nil
}

// Commit implements transport/mqtt.Outbox.
func (o *Outbox) Commit(seqs []uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var bad int
	for _, s := range seqs {
		e := o.recs[s]
		if e == nil || !e.inflight {
			bad++
			o.badOps = append(o.badOps, fmt.Sprintf("commit: seq %d not in flight", s))
			continue
		}
		o.inflight--
		delete(o.recs, s)
		if w, bit := o.committed[s/64], uint64(1)<<(s%64); w&bit == 0 {
			o.committed[s/64] = w | bit
			o.nCommit++
		}
	}
	o.checkEmpty()
	if bad > 0 {
		return fmt.Errorf("outbox: %d of %d committed records were not in flight", bad, len(seqs))
	}
	return nil
}

// Release implements transport/mqtt.Outbox.
func (o *Outbox) Release(seqs []uint64) {
	now := time.Now()
	o.mu.Lock()
	for _, s := range seqs {
		e := o.recs[s]
		if e == nil || !e.inflight {
			o.badOps = append(o.badOps, fmt.Sprintf("release: seq %d not in flight", s))
			continue
		}
		e.inflight = false
		o.inflight--
		o.lanes[o.laneOf(e.r, e.added, now)].push(s)
	}
	o.mu.Unlock()
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// Ready implements transport/mqtt.Notifier.
func (o *Outbox) Ready() <-chan struct{} { return o.ready }

func (o *Outbox) checkEmpty() {
	if len(o.recs) == 0 {
		select {
		case <-o.empty:
		default:
			close(o.empty)
		}
	}
}

// Pending returns how many records are queued and in flight.
func (o *Outbox) Pending() (queued, inflight int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.recs) - o.inflight, o.inflight
}

// Committed returns how many distinct records were committed.
func (o *Outbox) Committed() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nCommit
}

// BadOps lists protocol violations by the consumer: commits or releases
// of records that were not in flight, duplicate adds. Empty is correct.
func (o *Outbox) BadOps() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.badOps...)
}

// WaitEmpty waits until every added record has been committed.
func (o *Outbox) WaitEmpty(ctx context.Context) error {
	o.mu.Lock()
	ch := o.empty
	o.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		q, f := o.Pending()
		return fmt.Errorf("outbox not drained (%d queued, %d in flight): %w", q, f, ctx.Err())
	}
}

// seqHeap orders seqs oldest first, or newest first: a binary heap on
// the slice, typed (container/heap would box every seq).
type seqHeap struct {
	s      []uint64
	newest bool
}

func (h *seqHeap) Len() int { return len(h.s) }

func (h *seqHeap) less(i, j int) bool {
	if h.newest {
		return h.s[i] > h.s[j]
	}
	return h.s[i] < h.s[j]
}

func (h *seqHeap) push(v uint64) {
	h.s = append(h.s, v)
	for i := len(h.s) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.s[i], h.s[p] = h.s[p], h.s[i]
		i = p
	}
}

func (h *seqHeap) pop() uint64 {
	n := len(h.s) - 1
	v := h.s[0]
	h.s[0] = h.s[n]
	h.s = h.s[:n]
	for i := 0; ; {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && h.less(c+1, c) {
			c++
		}
		if !h.less(c, i) {
			break
		}
		h.s[i], h.s[c] = h.s[c], h.s[i]
		i = c
	}
	return v
}
