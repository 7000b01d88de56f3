package spool

import (
	"errors"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Item is one record in the spool: an opaque, already encoded payload with
// the envelope fields the spool needs to order, bound and recover it.
type Item struct {
	Seq      uint64
	Priority kestrel.Priority
	Time     int64 // ms UTC, the record time
	Data     []byte
}

// Loc is where a Store keeps a record; its meaning belongs to the Store.
type Loc uint64

// RecMeta describes a recovered record.
type RecMeta struct {
	Seq      uint64
	Priority kestrel.Priority
	Time     int64
	Size     int
	At       Loc
	// Sealed: the payload is encrypted (a LogStore segment written
	// through a SealedStore).
	Sealed bool
}

// Meta is what must survive a crash besides the records: the boot counter
// and the sequence high-water mark (no sequence number below NextSeq may be
// handed out again).
type Meta struct {
	Boot    uint32
	NextSeq uint64
}

// RecoverStats reports what recovery found.
type RecoverStats struct {
	Records      int   // records handed to the callback
	Dropped      int   // corrupt or torn regions cut off (each cost at least one record)
	DroppedBytes int64 // bytes cut off
	Duplicates   int   // records seen twice (kept once)
	// LostRecords counts the records recovery knows it lost: between a
	// damaged region and the next resynchronisation point, by their
	// ordinals in the segment (version 3 segments). Lost lists their
	// sequence ranges (the lost seqs lie within; at most maxLostRanges).
	LostRecords int
	Lost        []SeqRange
	// PriorLost counts losses an earlier recovery counted and marked.
	PriorLost int
	// MissingSegments counts segments the meta files list (the segments
	// that existed at the last change) of which no file is left: lost
	// with their records, whose number is not known. MissingIDs names them.
	MissingSegments int
	MissingIDs      []uint32
	// MaxSeq is the highest sequence number the medium mentions anywhere
	// (acknowledged records included), so that a lost high-water mark
	// never lets a number be reused.
	MaxSeq uint64
}

// Store is the storage engine under a Spool. The Spool serialises every call
// except Sync, which runs concurrently with Append, Drop and Read and must
// make durable exactly what was appended and dropped before it started.
//
// It is wider than the project's usual 1-3 methods because it is the seam
// between the spool's policy and a storage engine: the contract suite
// (contract_test.go) runs against every implementation.
type Store interface {
	// Recover calls fn, in sequence order and once per sequence number, for
	// every record that was synced and not dropped (records dropped but not
	// yet synced may come back: a duplicate, never a loss). It is called
	// once, before anything else. Payloads are read later with Read.
	Recover(fn func(RecMeta)) (RecoverStats, error)
	// Append buffers a record; it is durable once a later Sync returns nil.
	Append(it *Item) (Loc, error)
	// Drop forgets a record (acknowledged or evicted); persisted lazily.
	Drop(seq uint64, at Loc) error
	// Sync writes what was appended and dropped, and makes it durable.
	Sync() error
	// Read returns the payload of the record at `at`, appended to dst.
	Read(at Loc, size int, dst []byte) ([]byte, error)
	// LoadMeta and SaveMeta keep Meta; SaveMeta is durable when it returns.
	LoadMeta() (Meta, error)
	SaveMeta(Meta) error
	// Usage is the bytes the store occupies on its medium.
	Usage() int64
	Close() error
}

// Sentinel errors callers branch on.
var (
	ErrClosed   = errors.New("spool: closed")
	ErrTooLarge = errors.New("spool: record larger than MaxPayload")
	// ErrFull is returned when the spool cannot make room: only records it
	// may not evict (emergency) are left.
	ErrFull = errors.New("spool: full")
)

// SeqRange is a range of sequence numbers that records were lost from.
type SeqRange struct {
	First, Last uint64 // inclusive
	Records     int    // how many records were lost within it
}

// maxLostRanges bounds RecoverStats.Lost; LostRecords keeps counting.
const maxLostRanges = 64

func (st *RecoverStats) addLoss(n, first, last uint64) {
	if n == 0 {
		return
	}
	st.LostRecords += int(n)
	if len(st.Lost) < maxLostRanges {
		st.Lost = append(st.Lost, SeqRange{First: first, Last: last, Records: int(n)})
	}
}
