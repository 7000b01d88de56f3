package spool

import "slices"

// Entry states and places.
const (
	stQueued   = 0
	stInflight = 1
	stDead     = 2

	inMem     = 0 // payload in Spool.mem at memOff; not yet handed to the store
	inWriting = 1 // handed to the store, its Sync running; payload also still in mem
	inStore   = 2 // durable in the store at loc
)

// recOverhead is what the spool charges each record against MaxBytes on top
// of its payload: about the framing a record costs in the log.
const recOverhead = 10

// entry is the in-memory index of one record: 48 bytes, whatever the
// payload size.
type entry struct {
	seq    uint64
	time   int64 // record time, ms UTC
	at     int64 // append time, ns on the spool's monotonic clock; 0 when recovered
	loc    Loc
	size   uint32
	memOff uint32
	st     uint8
	where  uint8
}

// lane holds the records of one priority, sorted by seq (which is append
// order whenever the agent stamps before appending).
type lane struct {
	ents     []entry
	head     int // ents[:head] are dead
	dead     int // dead entries in ents[head:]
	live     int // queued + in flight
	inflight int
	bytes    int64 // payload bytes of live entries
}

// find returns the index of seq, or -1.
func (l *lane) find(seq uint64) int {
	i, ok := slices.BinarySearchFunc(l.ents[l.head:], seq, func(e entry, s uint64) int {
		switch {
		case e.seq < s:
			return -1
		case e.seq > s:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return l.head + i
}

// insert adds e in seq order and reports false for a duplicate seq.
func (l *lane) insert(e entry) (int, bool) {
	n := len(l.ents)
	if n == l.head || l.ents[n-1].seq < e.seq {
		if n > 0 {
			e.at = max(e.at, l.ents[n-1].at)
		}
		l.ents = append(l.ents, e)
		return n, true
	}
	i, ok := slices.BinarySearchFunc(l.ents[l.head:], e.seq, func(x entry, s uint64) int {
		switch {
		case x.seq < s:
			return -1
		case x.seq > s:
			return 1
		}
		return 0
	})
	if ok {
		return -1, false
	}
	// Keep append times non-decreasing along the lane (two goroutines can
	// append seqs out of order by microseconds): Take's scans stop at the
	// live/backlog boundary and must find a single one.
	i += l.head
	if i > 0 {
		e.at = max(e.at, l.ents[i-1].at)
	}
	e.at = min(e.at, l.ents[i].at)
	l.ents = slices.Insert(l.ents, i, e)
	return i, true
}

// tidy drops dead entries from the front, and compacts when more than half
// of the lane is dead. Indexes into the lane are invalid afterwards.
//
// A dead entry whose write is still in flight (inWriting) stays: the syncer
// must find it afterwards to drop it from the store, or the acknowledged
// record would come back after a restart.
func (l *lane) tidy() {
	for l.head < len(l.ents) && l.ents[l.head].st == stDead && l.ents[l.head].where != inWriting {
		l.head++
		l.dead--
	}
	if l.head == len(l.ents) {
		l.ents, l.head, l.dead = l.ents[:0], 0, 0
		return
	}
	if l.dead > 32 && l.dead > (len(l.ents)-l.head)/2 || l.head > 1024 && l.head > len(l.ents)/2 {
		out := l.ents[:0]
		for _, e := range l.ents[l.head:] {
			if e.st != stDead || e.where == inWriting {
				out = append(out, e)
			} else {
				l.dead--
			}
		}
		clear(l.ents[len(out):])
		l.ents, l.head = out, 0
	}
}
