package spool

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
)

// MemDisk is the medium under a MemStore. It outlives the stores opened on
// it, like a disk: opening a new MemStore on it without closing the old one
// is a crash, and only what was synced survives.
type MemDisk struct {
	mu       sync.Mutex
	records  map[Loc]Item // synced, not dropped
	order    []Loc        // append order of records (may hold dropped locs)
	meta     Meta
	capacity int64
	used     int64
	fail     error
	nextLoc  Loc
}

// memOverhead is what a record costs on a MemDisk beyond its payload, so
// that capacity behaves like a real medium.
const memOverhead = 16

// NewMemDisk returns an empty medium. capacity > 0 bounds the bytes it holds;
// a Sync that would exceed it fails with ENOSPC and writes nothing.
func NewMemDisk(capacity int64) *MemDisk {
	return &MemDisk{records: make(map[Loc]Item), capacity: capacity, nextLoc: 1}
}

// SetFailure makes every later Sync and SaveMeta fail with err (nil heals):
// a fake of read-only or failing media.
func (d *MemDisk) SetFailure(err error) {
	d.mu.Lock()
	d.fail = err
	d.mu.Unlock()
}

// MemStore is a Store in memory: fast, for tests and for devices that choose
// to have no flash spool at all.
type MemStore struct {
	d *MemDisk

	mu    sync.Mutex
	pend  []memPending
	drops []Loc
	// unsynced payloads, readable before Sync
	buf map[Loc]Item
}

type memPending struct {
	loc Loc
	it  Item
}

var _ Store = (*MemStore)(nil)

// OpenMem opens a store on d.
func OpenMem(d *MemDisk) *MemStore {
	return &MemStore{d: d, buf: make(map[Loc]Item)}
}

func (m *MemStore) Recover(fn func(RecMeta)) (RecoverStats, error) {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	var st RecoverStats
	order := m.d.order[:0]
	metas := make([]RecMeta, 0, len(m.d.records))
	for _, l := range m.d.order {
		if it, ok := m.d.records[l]; ok {
			order = append(order, l)
			metas = append(metas, RecMeta{Seq: it.Seq, Priority: it.Priority, Time: it.Time, Size: len(it.Data), At: l})
		}
	}
	m.d.order = order
	st.Duplicates = deliverSorted(metas, fn)
	st.Records = len(metas) - st.Duplicates
	return st, nil
}

func (m *MemStore) Append(it *Item) (Loc, error) {
	if len(it.Data) > MaxPayload {
		return 0, ErrTooLarge
	}
	c := *it
	c.Data = append([]byte(nil), it.Data...)
	m.d.mu.Lock()
	l := m.d.nextLoc
	m.d.nextLoc++
	m.d.mu.Unlock()
	m.mu.Lock()
	m.pend = append(m.pend, memPending{l, c})
	m.buf[l] = c
	m.mu.Unlock()
	return l, nil
}

func (m *MemStore) Drop(_ uint64, at Loc) error {
	m.mu.Lock()
	m.drops = append(m.drops, at)
	m.mu.Unlock()
	return nil
}

func (m *MemStore) Sync() error {
	m.mu.Lock()
	pend, drops := m.pend, m.drops
	m.pend, m.drops = nil, nil
	m.mu.Unlock()
	d := m.d
	d.mu.Lock()
	err := d.fail
	if err == nil {
		var freed, need int64
		for _, l := range drops {
			if it, ok := d.records[l]; ok {
				freed += int64(len(it.Data)) + memOverhead
			}
		}
		for _, p := range pend {
			need += int64(len(p.it.Data)) + memOverhead
		}
		// Drops are applied even when the records do not fit: like deleting
		// segments, they free room for the retry.
		for _, l := range drops {
			delete(d.records, l)
		}
		d.used -= freed
		if d.capacity > 0 && d.used+need > d.capacity {
			err = fmt.Errorf("memdisk: %w", syscall.ENOSPC)
		} else {
			for _, p := range pend {
				d.records[p.loc] = p.it
				d.order = append(d.order, p.loc)
			}
			d.used += need
		}
	}
	d.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		// Nothing of pend was written; the caller appends again.
		for _, p := range pend {
			delete(m.buf, p.loc)
		}
		if d.fail != nil {
			m.drops = append(drops, m.drops...)
		}
		return err
	}
	for _, p := range pend {
		delete(m.buf, p.loc)
	}
	return nil
}

func (m *MemStore) Read(at Loc, size int, dst []byte) ([]byte, error) {
	m.mu.Lock()
	it, ok := m.buf[at]
	m.mu.Unlock()
	if !ok {
		m.d.mu.Lock()
		it, ok = m.d.records[at]
		m.d.mu.Unlock()
	}
	if !ok || len(it.Data) != size {
		return dst, fmt.Errorf("memstore: no record at %d", at)
	}
	return append(dst, it.Data...), nil
}

func (m *MemStore) LoadMeta() (Meta, error) {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return m.d.meta, nil
}

func (m *MemStore) SaveMeta(me Meta) error {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if m.d.fail != nil {
		return m.d.fail
	}
	m.d.meta = me
	return nil
}

// Reclaimable is what the pending drops free at the next Sync.
func (m *MemStore) Reclaimable() int64 {
	m.mu.Lock()
	drops := append([]Loc(nil), m.drops...)
	m.mu.Unlock()
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	var n int64
	for _, l := range drops {
		if it, ok := m.d.records[l]; ok {
			n += int64(len(it.Data)) + memOverhead
		}
	}
	return n
}

func (m *MemStore) Usage() int64 {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return m.d.used
}

func (m *MemStore) Close() error { return nil }

// deliverSorted calls fn for metas in sequence order, once per sequence
// number (the first appended wins), and returns how many duplicates it
// skipped.
func deliverSorted(metas []RecMeta, fn func(RecMeta)) int {
	slices.SortStableFunc(metas, func(a, b RecMeta) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	dups := 0
	for i, m := range metas {
		if i > 0 && metas[i-1].Seq == m.Seq {
			dups++
			continue
		}
		fn(m)
	}
	return dups
}
