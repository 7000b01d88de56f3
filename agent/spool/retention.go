package spool

import (
	"os"
	"time"
)

// Retention on the medium (issue 14, item 6; docs/spool.md "Retention on
// the medium"). Records that have left the spool (acknowledged or evicted)
// must not stay readable on the flash. Two mechanisms:
//
//   - Wipe. A drained segment's file is overwritten with zeros over every
//     byte it may have written, and synced, before it goes into the pool
//     of recycled files or is unlinked: an unlink (or a rename into the
//     pool) leaves the data blocks as they were, readable on the raw
//     device. The first write replaces the header with wipeMagic and is
//     synced on its own, so that a power cut in the middle of a wipe
//     leaves a file recovery recognises and wipes again, never a damaged
//     segment it would count as a loss.
//   - Bounded segment age. A segment is appended to until it is full
//     (docs/spool.md, choice 5), which at a trickle can take a day; so the
//     active segment is also sealed once it is older than the span (by
//     default MaxAge/8), after which it drains and is wiped like any other.

// noRetention turns both mechanisms off: the test of the test
// (TestRetentionOnMedium's "without-mechanism" runs) sets it.
var noRetention bool

// wipeMagic starts the header of a segment file being wiped (or a pooled
// file that was): recovery finishes the wipe and pools it.
const wipeMagic = "KSPW"

// wipeBuf is the size of one zeroing write.
const wipeBuf = 64 << 10

func isWipeHeader(b []byte) bool { return len(b) >= 4 && string(b[:4]) == wipeMagic }

// wipe overwrites the first extent bytes of the file at path (never past
// its end) with zeros, durably: first the header, with wipeMagic, then the
// rest. It returns the bytes it wrote.
func wipe(path string, extent int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	extent = min(extent, fi.Size())
	if extent <= 0 {
		return 0, nil
	}
	hdr := make([]byte, min(segHeaderLen, extent))
	copy(hdr, wipeMagic)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return 0, err
	}
	if err := fdatasync(f); err != nil {
		return 0, err
	}
	zeros := make([]byte, wipeBuf)
	wrote := int64(len(hdr))
	for off := int64(len(hdr)); off < extent; {
		n := min(int64(len(zeros)), extent-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return wrote, err
		}
		off += n
		wrote += n
	}
	if err := fdatasync(f); err != nil {
		return wrote, err
	}
	return wrote, nil
}

// removeWiped wipes a file's first extent bytes, then unlinks it (even if
// the wipe failed: the space is needed; the failure is counted).
func (s *LogStore) removeWiped(path string, extent int64) {
	s.wipeFile(path, extent)
	os.Remove(path)
}

// wipeFile wipes and counts; false if the medium refused. Called with mu
// held (or before the store is shared).
func (s *LogStore) wipeFile(path string, extent int64) bool {
	if noRetention {
		return true
	}
	n, err := wipe(path, extent)
	s.wipedBytes += uint64(n)
	if err != nil {
		s.wipeErrors++
		return false
	}
	s.wiped++
	return true
}

// segmentSpan is the age at which the active segment is sealed, for a
// spool bounded in age: an eighth of MaxAge (0: no bound, none).
func segmentSpan(maxAge time.Duration) time.Duration { return maxAge / 8 }

// setAging gives the log the clock (ns, monotonic) by which segment ages
// are judged, and the span after which the active segment is sealed
// (0: only when full). wall turns the record time of a segment found at
// Open into the clock's terms (Spool.recoveredAt), once.
func (s *LogStore) setAging(clock func() int64, span time.Duration, wall func(ms int64) int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock, s.span = clock, int64(span)
	for _, seg := range s.segs {
		if seg.hasWall && wall != nil {
			seg.born, seg.hasWall = wall(seg.firstWall), false
		}
	}
}

// agedOut lists the segments holding live records that were begun at or
// before cut (on the aging clock): the Spool evicts their records, other
// than emergency ones, so that the segment drains and is wiped before its
// oldest, already delivered, records outlive MaxAge.
func (s *LogStore) agedOut(cut int64) map[uint32]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if noRetention || s.clock == nil {
		return nil
	}
	var out map[uint32]bool
	for id, seg := range s.segs {
		if seg.live > 0 && seg.end > 0 && !seg.hasWall && seg.born <= cut {
			if out == nil {
				out = map[uint32]bool{}
			}
			out[id] = true
		}
	}
	return out
}

func (s *LogStore) now() int64 {
	if s.clock == nil {
		return 0
	}
	return s.clock()
}

// aged reports whether a segment has been appended to for the span.
// Called with mu held.
func (s *LogStore) aged(seg *segment) bool {
	return s.span > 0 && s.clock != nil && !noRetention && s.clock()-seg.born >= s.span
}

// dirtyExtent is where the bytes a segment file may hold end: what this
// segment wrote (whole pages) or, for a file found at Open, its written
// extent. Pooled files are wiped, so a recycled file's earlier contents
// are zeros.
func dirtyEnd(off int64) int64 { return (off + 4095) &^ 4095 }

// readHeader reads a file's first len(b) bytes; false if it cannot.
func readHeader(path string, b []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.ReadAt(b, 0)
	return err == nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
