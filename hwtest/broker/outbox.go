package broker

import (
	"container/heap"
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
	recs      map[uint64]entry
	inflight  map[uint64]bool
	committed map[uint64]int // commit count per seq; >1 would be a bug
	badOps    []string
	ready     chan struct{}
	empty     chan struct{} // closed when nothing is queued or in flight
}

type entry struct {
	r     kestrel.Record
	added time.Time
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
		recs:      make(map[uint64]entry),
		inflight:  make(map[uint64]bool),
		committed: make(map[uint64]int),
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
		o.recs[r.Seq] = entry{r: r, added: now}
		heap.Push(&o.lanes[o.laneOf(r, now, now)], r.Seq)
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
			seq := heap.Pop(h).(uint64)
			e := o.recs[seq]
			if l == laneLive && now.Sub(e.added) >= o.Live {
				// The newest is no longer live, so none of the rest is.
				heap.Push(&o.lanes[laneNormal], seq)
				for h.Len() > 0 {
					heap.Push(&o.lanes[laneNormal], heap.Pop(h))
				}
				break
			}
			o.inflight[seq] = true
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
		if !o.inflight[s] {
			bad++
			o.badOps = append(o.badOps, fmt.Sprintf("commit: seq %d not in flight", s))
			continue
		}
		delete(o.inflight, s)
		delete(o.recs, s)
		o.committed[s]++
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
		if !o.inflight[s] {
			o.badOps = append(o.badOps, fmt.Sprintf("release: seq %d not in flight", s))
			continue
		}
		delete(o.inflight, s)
		e := o.recs[s]
		heap.Push(&o.lanes[o.laneOf(e.r, e.added, now)], s)
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
	return len(o.recs) - len(o.inflight), len(o.inflight)
}

// Committed returns how many distinct records were committed.
func (o *Outbox) Committed() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.committed)
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

// seqHeap orders seqs oldest first, or newest first.
type seqHeap struct {
	s      []uint64
	newest bool
}

func (h *seqHeap) Len() int { return len(h.s) }
func (h *seqHeap) Less(i, j int) bool {
	if h.newest {
		return h.s[i] > h.s[j]
	}
	return h.s[i] < h.s[j]
}
func (h *seqHeap) Swap(i, j int) { h.s[i], h.s[j] = h.s[j], h.s[i] }
func (h *seqHeap) Push(x any)    { h.s = append(h.s, x.(uint64)) }
func (h *seqHeap) Pop() any {
	v := h.s[len(h.s)-1]
	h.s = h.s[:len(h.s)-1]
	return v
}
