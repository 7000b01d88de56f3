package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// On disk a LogStore is a directory of segments, seg-XXXXXXXX.log (hex id,
// growing), each a 16-byte header followed by frames (frame.go), plus a meta
// file with two checksummed slots and a LOCK file held with flock.
//
// Only whole segments are ever deleted, once every record in them has been
// acknowledged or evicted; single acknowledgements are persisted as small
// ack frames that ride along with the next group commit, never a write of
// their own.

const (
	readAhead = 64 << 10

	// DefaultSegmentBytes is the segment size: small enough that deleting
	// an acknowledged segment frees room soon, large enough that creating
	// segments (a metadata write each) is rare.
	DefaultSegmentBytes = 4 << 20

	segHeaderLen = 16
	segMagic     = "KSPL"
	segVersion   = 3 // 1: no pad frames, unseeded checksums; 2: no absolute records, no resync (both still read)
	// segVersionSealed is version 3 with sealed payloads (flag segSealed):
	// a binary from before spool encryption refuses it (counts it as
	// damage) instead of sending ciphertext as records.
	segVersionSealed = 4

	metaSlot  = 4096   // slots sit on separate pages so one torn write spares the other
	metaMagic = "KSMT" // version 1 slot: 32 bytes, no segment list (still read)
	// metaMagic2 slots add the list of segments that exist, so that a
	// segment file that goes missing is detected and counted.
	metaMagic2 = "KSM2"
)

func segName(id uint32) string  { return fmt.Sprintf("seg-%08x.log", id) }
func freeName(id uint32) string { return fmt.Sprintf("free-%08x.log", id) }

// Segment files are recycled: a drained segment is renamed free-XXXXXXXX.log
// (its old id) and becomes the file of a later segment, whose group commits
// then overwrite blocks the filesystem has already written. A new file's
// blocks are preallocated but unwritten, and ext4 logs a journal
// transaction each time a write converts one: at a trickle that is most of
// what reaches the device (docs/spool.md). The old frames left behind the
// new segment's end can never pass for its records: frame checksums are
// seeded with the segment id.

// defaultPoolMax bounds the drained files kept for reuse when the Spool does
// not size the pool (64 MiB of default segments).
const defaultPoolMax = 16

// segRecycled, in a segment header's flags byte, marks a segment written
// over a recycled file: bytes behind its clean end are old frames, not a
// torn write, so recovery neither counts nor zeroes them.
const segRecycled = 1

// segSealed, in the flags byte, marks a segment whose record payloads are
// encrypted (SealedStore): a store without the key never hands them out.
const segSealed = 2

type freeSeg struct {
	id   uint32
	size int64
	used int64 // bytes from the start that have been written (the rest is unwritten preallocation)
}

type segment struct {
	id        uint32
	f         *os.File // nil until the segment's first write
	written   int64    // valid bytes in the file
	alloc     int64    // bytes allocated (preallocated size)
	end       int64    // written + buffered
	stWritten frameState
	live      int
	seed      uint32 // frame checksum seed (frame.go)
	recycle   uint32 // id of the free file this segment is written over; 0: a new file
	used      int64  // bytes of the file written by earlier segments
	born      int64  // when its header was appended, on the aging clock (retention.go)
	dirty     int64  // bytes of the file that may hold data (wiped when it drains)
	sealed    bool   // payloads encrypted (segSealed)
	// firstWall is the record time (ms) of the first record of a segment
	// found at Open, until setAging turns it into born.
	firstWall int64
	hasWall   bool
	// tail holds the bytes from the start of the sector that contains
	// `written` up to `written`: with direct I/O a group commit that does
	// not start on a sector boundary rewrites them.
	tail []byte
}

// stream is one sequence of segments being appended to. Emergency records
// have their own, so that the records that are never evicted never pin a
// segment of evictable ones: on a full medium, evicting bulk and normal
// records then frees whole segments.
type stream struct {
	active *segment
	st     frameState // delta base at active.end
}

func streamOf(p kestrel.Priority) int {
	if p >= kestrel.PriorityEmergency {
		return 1
	}
	return 0
}

type chunk struct {
	seg   *segment
	off   int64
	data  []byte
	recs  int
	stEnd frameState
	tail  []byte // the segment's tail once written (direct I/O)
	wrote int    // bytes handed to write(2)
}

// LogStore is the durable Store: a segmented append-only log of CRC32C
// framed records.
type LogStore struct {
	dir      string
	segBytes int64
	dirf     *os.File
	lockf    *os.File
	metaCtr  uint64
	// metaMu serialises meta writes; taken after mu when both are held.
	metaMu   sync.Mutex
	lastMeta Meta
	// metaSegs lists the segments the newest meta slot says exist; nil
	// when it does not say (no meta, a version 1 slot, a list too long).
	metaSegs []uint32

	syncMu sync.Mutex // one Sync at a time
	// ioMu keeps page-cache reads of a segment from overlapping a direct
	// write to it: the kernel cannot drop a page that a reader holds while
	// a direct write lands under it, and would leave it stale ("page cache
	// invalidation failure on direct I/O").
	ioMu sync.RWMutex

	mu      sync.Mutex
	segs    map[uint32]*segment
	streams [2]stream // 0: bulk, normal, high; 1: emergency
	nextID  uint32
	chunks  []chunk  // appended, not yet written
	writing []chunk  // being written by Sync
	acks    []uint64 // dropped since the last write
	rbuf    []byte   // read-ahead window of segment rseg from roff
	rseg    uint32   // 0: none (ids start at 1)
	roff    int64
	spare   [][]byte
	closed  bool
	// align is the direct I/O sector size (0: buffered writes). With
	// direct I/O a group commit writes the sectors it changes, not the
	// 4 KiB pages: at a trickle that is the difference between about 1.3
	// and 11 bytes written per payload byte (docs/spool.md).
	align int64
	dbuf  []byte // aligned scratch buffer for direct writes
	// free lists the drained segment files kept for reuse, at most
	// poolMax. Once the medium has been full (pressure), drained files
	// are deleted instead and the pool is emptied: the space is worth
	// more than the journal writes saved.
	free     []freeSeg
	poolMax  int
	pressure bool
	// reserveBytes are kept allocated in the file "reserve" for
	// emergency records: when the medium is full and an emergency waits,
	// the Spool releases them (ReleaseReserve) and writes it.
	reserveBytes int64
	reserveHeld  bool
	// written bytes in total; for metrics and the write-amplification test
	bytesWritten uint64
	syncs        uint64
	fsyncs       uint64
	// clock and span seal the active segment by age (retention.go).
	clock func() int64
	span  int64
	// wiped counts drained files overwritten before reuse or unlink.
	wiped, wipedBytes, wipeErrors uint64
	// sealNew marks new segments sealed; keyed says a SealedStore reads
	// sealed records (without one they are counted lost, never handed out).
	sealNew, keyed bool
}

var _ Store = (*LogStore)(nil)

// ErrLocked means another process has the spool directory open.
var ErrLocked = errors.New("spool: directory in use by another process")

// OpenLog opens (creating it 0700 if needed) the log in dir. segBytes <= 0
// means DefaultSegmentBytes.
func OpenLog(dir string, segBytes int64) (*LogStore, error) {
	if segBytes <= 0 {
		segBytes = DefaultSegmentBytes
	}
	if segBytes < segHeaderLen+64 || segBytes > 1<<31 {
		return nil, fmt.Errorf("spool: segment size %d out of range", segBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", dir, err)
	}
	s := &LogStore{dir: dir, segBytes: segBytes, segs: make(map[uint32]*segment), poolMax: defaultPoolMax}
	var err error
	if s.lockf, err = os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDONLY|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("spool: lock file: %w", err)
	}
	if err := unix.Flock(int(s.lockf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		s.lockf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	if s.dirf, err = os.Open(dir); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("spool: open dir: %w", err)
	}
	s.align = dioAlign(s.lockf)
	return s, nil
}

// dioAlign asks the filesystem for its direct I/O alignment (statx
// STATX_DIOALIGN, Linux 6.1): the sector size, or 0 when direct I/O is not
// offered and the log writes through the page cache.
func dioAlign(f *os.File) int64 {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err != nil ||
		st.Mask&unix.STATX_DIOALIGN == 0 {
		return 0
	}
	a := int64(st.Dio_offset_align)
	if a == 0 || a > dioMax || a&(a-1) != 0 || st.Dio_mem_align > dioMax {
		return 0
	}
	return a
}

// Direct writes go through an aligned buffer of dioChunk bytes; dioMax is
// the largest sector (and memory) alignment handled.
const (
	dioMax   = 4096
	dioChunk = 256 << 10
)

// DirectIO reports whether group commits bypass the page cache.
func (s *LogStore) DirectIO() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.align > 0
}

func (s *LogStore) closeFiles() {
	for _, f := range []*os.File{s.dirf, s.lockf} {
		if f != nil {
			f.Close()
		}
	}
}

// Recover implements Store. It reads every segment, cuts torn or corrupt
// tails off (truncating the file so the damage is counted once), applies the
// persisted acknowledgements and deletes segments left with nothing live.
func (s *LogStore) Recover(fn func(RecMeta)) (RecoverStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st RecoverStats
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return st, fmt.Errorf("spool: read dir: %w", err)
	}
	var ids []uint32
	for _, e := range ents {
		n := e.Name()
		if id, ok := parseSegName(n, "free-"); ok {
			s.keepFree(uint32(id))
		}
		if id, ok := parseSegName(n, "seg-"); ok {
			ids = append(ids, uint32(id))
		}
	}
	slices.Sort(ids)
	var (
		metas []RecMeta
		runs  []seqRun
		buf   []byte
	)
	changed := false
	for _, id := range ids {
		path := filepath.Join(s.dir, segName(id))
		f, err := os.Open(path)
		if err != nil {
			return st, fmt.Errorf("spool: open segment: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return st, fmt.Errorf("spool: stat segment: %w", err)
		}
		if int64(cap(buf)) < fi.Size() {
			buf = make([]byte, fi.Size())
		}
		buf = buf[:fi.Size()]
		if _, err := io.ReadFull(f, buf); err != nil {
			f.Close()
			return st, fmt.Errorf("spool: read segment %s: %w", segName(id), err)
		}
		version := segHeaderVersion(buf, id)
		if version == 0 {
			// A segment whose header never reached the disk holds
			// nothing. If it still has the header of another id it is
			// a recycled file that was never written: back to the pool.
			f.Close()
			changed = true
			// A file being wiped (retention.go) when the power went,
			// or a wiped pool file renamed for a segment whose header
			// never landed: wipe it (again) and pool it.
			if isWipeHeader(buf) || len(buf) >= segHeaderLen && segHeaderVersion(buf, binary.LittleEndian.Uint32(buf[8:])) != 0 {
				w := writtenExtent(path, fi.Size())
				s.retireFile(id, fi.Size(), w, w)
				continue
			}
			if len(bytes.TrimRight(buf, "\x00")) > 0 {
				st.Dropped++
				st.DroppedBytes += int64(len(buf))
			}
			s.removeWiped(path, writtenExtent(path, fi.Size()))
			continue
		}
		seg := &segment{id: id, f: f, alloc: fi.Size(), sealed: buf[5]&segSealed != 0}
		if version >= 2 {
			seg.seed = segSeed(id)
		}
		off := segHeaderLen
		fs := frameState{seed: seg.seed}
		for off < len(buf) {
			fr, n, err := decodeFrame(buf[off:], &fs, runs)
			if err != nil {
				if len(bytes.TrimRight(buf[off:], "\x00")) == 0 {
					break // the preallocated rest of the segment: its clean end
				}
				// Damage. In a version 3 segment every group commit
				// starts with an absolute record: resynchronise there,
				// count what lies between by the ordinals, and mark the
				// region as counted.
				if version >= 3 {
					if next, ok := resync(buf, off+1, fs.seed); ok {
						skip := fs
						fr, _, _ := decodeFrame(buf[next:], &skip, nil)
						lost := fr.ord - min(fr.ord, fs.n)
						st.Dropped++
						st.DroppedBytes += int64(next - off)
						st.addLoss(lost, fs.seq+1, fr.item.Seq-1)
						st.MaxSeq = max(st.MaxSeq, fr.item.Seq)
						if mark := appendLossFrame(nil, fs.seed, next-off, lost, fs.seq+1, fr.item.Seq-1); len(mark) == next-off {
							markLoss(path, int64(off), mark)
						}
						fs.n = fr.ord
						off = next
						continue
					}
				}
				// Nothing valid follows. In a recycled file the rest is
				// the old frames of the file's previous segment (or a
				// torn last commit, which looks the same): not counted.
				if buf[5]&segRecycled != 0 {
					break
				}
				// In a new file it is a torn or corrupt tail: zero it
				// (keeping the allocation) so that it is counted once;
				// if the medium refuses, recovery stops here again.
				if bad := len(bytes.TrimRight(buf[off:], "\x00")); bad > 0 {
					st.Dropped++
					st.DroppedBytes += int64(bad)
					zeroSync(path, int64(off), bad)
				}
				break
			}
			switch fr.typ {
			case frameLoss:
				st.PriorLost += int(fr.loss[0])
			case frameRecord, frameRecordAbs:
				st.MaxSeq = max(st.MaxSeq, fr.item.Seq)
				if !seg.hasWall {
					seg.firstWall, seg.hasWall = fr.item.Time, true
				}
				metas = append(metas, RecMeta{Seq: fr.item.Seq, Priority: fr.item.Priority, Time: fr.item.Time,
					Size: len(fr.item.Data), At: Loc(uint64(id)<<32 | uint64(off)), Sealed: seg.sealed})
			case frameAcks:
				runs = fr.acks
				if k := len(runs) - 1; k >= 0 {
					st.MaxSeq = max(st.MaxSeq, runs[k].first+runs[k].n-1)
				}
			}
			off += n
		}
		seg.written, seg.end, seg.stWritten = int64(off), int64(off), fs
		we := writtenExtent(path, fi.Size())
		if buf[5]&segRecycled != 0 {
			seg.used = we
		}
		seg.dirty = max(seg.written, we)
		if s.align > 0 {
			seg.tail = slices.Clone(buf[int64(off)&^(s.align-1) : off])
		}
		s.segs[id] = seg
	}
	runs = mergeRuns(runs)
	live := metas[:0]
	var sealedLost []RecMeta
	for _, m := range metas {
		if inRuns(runs, m.Seq) {
			continue
		}
		if m.Sealed && !s.keyed {
			sealedLost = append(sealedLost, m) // encrypted, and no key: unreadable
			continue
		}
		live = append(live, m)
	}
	for i, m := range sealedLost {
		if i == 0 || sealedLost[i-1].Seq+1 != m.Seq {
			st.Dropped++
		}
		st.DroppedBytes += int64(m.Size)
		st.addLoss(1, m.Seq, m.Seq)
	}
	st.Duplicates = deliverSorted(live, func(m RecMeta) {
		s.segs[uint32(m.At>>32)].live++
		st.Records++
		fn(m)
	})
	// A segment the newest meta list names, of which no file is left
	// (neither live nor drained into the pool), was lost.
	if s.metaSegs != nil {
		present := make(map[uint32]bool, len(ids)+len(s.free))
		for _, id := range ids {
			present[id] = true
		}
		for _, f := range s.free {
			present[f.id] = true
		}
		for _, id := range s.metaSegs {
			if !present[id] {
				st.MissingSegments++
				st.MissingIDs = append(st.MissingIDs, id)
			}
		}
	}
	var maxID uint32
	var drained []*segment
	for id, seg := range s.segs {
		maxID = max(maxID, id)
		if seg.live == 0 {
			drained = append(drained, seg)
			delete(s.segs, id)
			changed = true
		}
	}
	if changed || st.MissingSegments > 0 {
		s.saveMetaLocked() // the list without them, before they go
	}
	for _, seg := range drained {
		seg.f.Close()
		s.retireFile(seg.id, max(seg.written, seg.alloc), max(seg.written, seg.used), seg.dirty)
	}
	// A recycled file holds frames of its earlier segments, all with ids
	// up to its name's: new ids start above every name, so that no seed is
	// ever used twice.
	for _, f := range s.free {
		maxID = max(maxID, f.id)
	}
	if changed {
		syncDir(s.dirf)
	}
	s.nextID = maxID + 1
	if s.reserveBytes > 0 {
		s.mu.Unlock()
		s.RestoreReserve()
		s.mu.Lock()
	}
	for i := range s.streams {
		a := s.newSeg()
		s.streams[i] = stream{active: a, st: a.stWritten}
	}
	return st, nil
}

func parseSegName(name, prefix string) (uint64, bool) {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".log") {
		return 0, false
	}
	id, err := strconv.ParseUint(name[len(prefix):len(name)-4], 16, 32)
	return id, err == nil && id != 0
}

// keepFree adds an existing free file to the pool, or deletes it when the
// pool is full. Called with mu held (or before the store is shared).
func (s *LogStore) keepFree(id uint32) {
	path := filepath.Join(s.dir, freeName(id))
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	used := writtenExtent(path, fi.Size())
	if len(s.free) >= s.poolMax || s.pressure {
		s.removeWiped(path, used)
		return
	}
	// A file pooled before drained files were wiped (or by a build
	// that did not) still holds its records: wipe it now.
	if hdr := make([]byte, segHeaderLen); readHeader(path, hdr) && !isWipeHeader(hdr) && !allZero(hdr) {
		if !s.wipeFile(path, used) {
			os.Remove(path)
			return
		}
	}
	s.free = append(s.free, freeSeg{id: id, size: fi.Size(), used: used})
}

// writtenExtent is where the file's first hole starts: ext4 and xfs report
// preallocated but unwritten blocks as a hole, so this is how far a new
// segment can write over blocks already written. Without SEEK_HOLE it
// assumes the whole file.
func writtenExtent(path string, size int64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		return size
	}
	return off
}

// retireFile disposes of the file of a drained segment: its first extent
// bytes are wiped (retention.go), then it goes into the pool, or is
// deleted. The rename, like an unlink, is not synced: if a crash loses it
// the segment comes back wiped, and recovery wipes and pools it again.
// Called with mu held.
func (s *LogStore) retireFile(id uint32, size, used, extent int64) {
	path := filepath.Join(s.dir, segName(id))
	if !s.wipeFile(path, extent) {
		os.Remove(path)
		return
	}
	if !s.pressure && len(s.free) < s.poolMax {
		if err := os.Rename(path, filepath.Join(s.dir, freeName(id))); err == nil {
			s.free = append(s.free, freeSeg{id: id, size: size, used: used})
			return
		}
	}
	os.Remove(path)
}

// takeFree removes from the pool the file with the most written blocks:
// the new segment's commits then convert the fewest unwritten ones.
// Called with mu held.
func (s *LogStore) takeFree() (freeSeg, bool) {
	best := -1
	for i, f := range s.free {
		if best < 0 || f.used > s.free[best].used {
			best = i
		}
	}
	if best < 0 {
		return freeSeg{}, false
	}
	f := s.free[best]
	s.free = slices.Delete(s.free, best, best+1)
	return f, true
}

const reserveName = "reserve"

// RestoreReserve allocates the emergency reserve if it is not held, best
// effort (a full medium leaves it released).
func (s *LogStore) RestoreReserve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserveHeld || s.reserveBytes <= 0 || s.closed {
		return
	}
	path := filepath.Join(s.dir, reserveName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, s.reserveBytes)
	f.Close()
	if err != nil {
		os.Remove(path)
		return
	}
	s.reserveHeld = true
}

// Crowded reports whether the medium has less free space than two
// segments and the reserve: a spool that ran full stays "full" until then.
func (s *LogStore) Crowded() (crowded, known bool) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(s.dirf.Fd()), &st); err != nil {
		return false, false
	}
	s.mu.Lock()
	need := 2*s.segBytes + s.reserveBytes
	s.mu.Unlock()
	return int64(st.Bavail)*int64(st.Bsize) < need, true
}

// ReleaseReserve frees the emergency reserve; false if none was held.
func (s *LogStore) ReleaseReserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reserveHeld {
		return false
	}
	s.reserveHeld = false
	return os.Remove(filepath.Join(s.dir, reserveName)) == nil
}

// setPoolMax bounds the pool of drained files (SetLimits); files over the
// new bound are deleted.
func (s *LogStore) setPoolMax(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.poolMax = n
	for len(s.free) > n {
		f := s.free[len(s.free)-1]
		os.Remove(filepath.Join(s.dir, freeName(f.id)))
		s.free = s.free[:len(s.free)-1]
	}
}

// relieve is called when the medium is full: the pool is deleted and no
// drained file is kept again until the store is reopened.
func (s *LogStore) relieve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pressure = true
	for _, f := range s.free {
		os.Remove(filepath.Join(s.dir, freeName(f.id)))
	}
	s.free = nil
}

// segHeaderVersion returns the version of a valid segment header for id,
// or 0.
func segHeaderVersion(b []byte, id uint32) int {
	if len(b) < segHeaderLen || string(b[:4]) != segMagic || b[4] < 1 || b[4] > segVersionSealed ||
		binary.LittleEndian.Uint32(b[8:]) != id ||
		binary.LittleEndian.Uint32(b[12:]) != crc32.Checksum(b[:12], castagnoli) {
		return 0
	}
	return int(b[4])
}

func appendSegHeader(dst []byte, id uint32, flags byte) []byte {
	start := len(dst)
	dst = append(dst, segMagic...)
	v := byte(segVersion)
	if flags&segSealed != 0 {
		v = segVersionSealed
	}
	dst = append(dst, v, flags, 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, id)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func mergeRuns(runs []seqRun) []seqRun {
	slices.SortFunc(runs, func(a, b seqRun) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	out := runs[:0]
	for _, r := range runs {
		if k := len(out) - 1; k >= 0 && r.first <= out[k].first+out[k].n {
			out[k].n = max(out[k].n, r.first+r.n-out[k].first)
			continue
		}
		out = append(out, r)
	}
	return out
}

func inRuns(runs []seqRun, seq uint64) bool {
	i, _ := slices.BinarySearchFunc(runs, seq, func(r seqRun, s uint64) int {
		switch {
		case r.first+r.n <= s:
			return -1
		case r.first > s:
			return 1
		}
		return 0
	})
	return i < len(runs) && runs[i].first <= seq && seq < runs[i].first+runs[i].n
}

func (s *LogStore) newSeg() *segment {
	seg := &segment{id: s.nextID, seed: segSeed(s.nextID), sealed: s.sealNew}
	seg.stWritten = frameState{seed: seg.seed}
	s.nextID++
	s.segs[seg.id] = seg
	return seg
}

func (s *LogStore) isActive(seg *segment) bool {
	return seg == s.streams[0].active || seg == s.streams[1].active
}

// tail returns the chunk that appends to the stream's active segment,
// starting the segment (its header) if need be.
func (s *LogStore) tail(sm *stream) *chunk {
	a := sm.active
	var c *chunk
	for k := len(s.chunks) - 1; k >= 0; k-- {
		if s.chunks[k].seg == a {
			if s.chunks[k].off+int64(len(s.chunks[k].data)) == a.end {
				c = &s.chunks[k]
			}
			break
		}
	}
	if c == nil {
		var data []byte
		if k := len(s.spare) - 1; k >= 0 {
			data, s.spare = s.spare[k][:0], s.spare[:k]
		}
		s.chunks = append(s.chunks, chunk{seg: a, off: a.end, data: data, stEnd: sm.st})
		c = &s.chunks[len(s.chunks)-1]
	}
	if a.end == 0 {
		var flags byte
		if a.f == nil && a.recycle == 0 {
			if f, ok := s.takeFree(); ok {
				a.recycle, a.used = f.id, f.used
			}
		}
		if a.recycle != 0 {
			flags = segRecycled
		}
		if a.sealed {
			flags |= segSealed
		}
		c.data = appendSegHeader(c.data, a.id, flags)
		a.end = segHeaderLen
		a.born = s.now()
	}
	return c
}

// Append implements Store. Append and Sync are never called concurrently
// (the Spool appends from its syncer just before syncing).
func (s *LogStore) Append(it *Item) (Loc, error) {
	if len(it.Data) > MaxPayload {
		return 0, ErrTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if s.streams[0].active == nil {
		return 0, errors.New("spool: log store used before Recover")
	}
	sm := &s.streams[streamOf(it.Priority)]
	s.retireActive(sm)
	if sm.active.end > segHeaderLen && sm.active.end+int64(len(it.Data)+maxFrameHeader) > s.segBytes {
		sm.active = s.newSeg()
		sm.st = sm.active.stWritten
	}
	c := s.tail(sm)
	a := sm.active
	at := Loc(uint64(a.id)<<32 | uint64(a.end))
	n := len(c.data)
	if c.recs == 0 {
		sm.st.abs = true // each group commit starts with a resync point
	}
	c.data = appendRecordFrame(c.data, &sm.st, it)
	a.end += int64(len(c.data) - n)
	a.live++
	c.recs++
	c.stEnd = sm.st
	return at, nil
}

// Drop implements Store.
func (s *LogStore) Drop(seq uint64, at Loc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segs[uint32(at>>32)]
	if seg == nil {
		return nil
	}
	seg.live--
	if seg.live > 0 || s.isActive(seg) {
		s.acks = append(s.acks, seq)
	}
	return nil
}

// Sync implements Store. Acknowledgements alone never cause a write (a lost
// one costs a duplicate, never a loss); they ride with the next records, or
// with Close.
func (s *LogStore) Sync() error { return s.sync(false) }

func (s *LogStore) sync(flushAcks bool) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	s.deleteEmpty()
	if len(s.chunks) == 0 && (len(s.acks) == 0 || !flushAcks) {
		s.mu.Unlock()
		return nil
	}
	acks := s.acks
	if len(acks) > 0 {
		slices.Sort(acks)
		var runs []seqRun
		for _, q := range acks {
			runs = appendRun(runs, q)
		}
		sm := &s.streams[0]
		c := s.tail(sm)
		n := len(c.data)
		c.data = appendAckFrame(c.data, sm.active.seed, runs)
		sm.active.end += int64(len(c.data) - n)
		s.acks = nil
	}
	s.pad()
	work := s.chunks
	s.chunks, s.writing = nil, work
	s.mu.Unlock()

	err := s.write(work)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing = nil
	if err != nil {
		s.undo(work)
		s.acks = append(acks, s.acks...)
		return err
	}
	for _, c := range work {
		c.seg.written = c.off + int64(len(c.data))
		c.seg.stWritten = c.stEnd
		c.seg.tail = c.tail
		s.bytesWritten += uint64(c.wrote)
		if len(s.spare) < 4 && cap(c.data) <= 1<<20 {
			s.spare = append(s.spare, c.data) // reuse, but do not hoard a burst's buffers
		}
	}
	s.syncs++
	s.deleteEmpty()
	return nil
}

// pad ends each active segment's pending chunk on a sector boundary with a
// pad frame, so that the next group commit starts a sector of its own and
// writes only new sectors. A pad costs space, never an extra write (the
// sector is written either way); it is skipped where it would waste more
// bytes than the commit adds, as at one small record a second, so that a
// segment never holds mostly padding. Without a pad the next commit
// rewrites the partial sector (segment.tail). Called with mu held.
func (s *LogStore) pad() {
	a := s.align
	if a == 0 {
		return
	}
	for i := range s.chunks {
		c := &s.chunks[i]
		seg := c.seg
		if !s.isActive(seg) || c.off+int64(len(c.data)) != seg.end {
			continue
		}
		gap := -seg.end & (a - 1)
		if gap == 0 {
			continue
		}
		if gap < minPad {
			gap += a
		}
		if gap > int64(len(c.data)) || seg.end+gap > s.segBytes {
			continue
		}
		c.data = appendPadFrame(c.data, seg.seed, int(gap))
		seg.end += gap
	}
}

// write puts the chunks in their segments and syncs them. Segments are
// opened for writing only here, so that between group commits no file is
// open for writing (a medium can then be remounted read-only under us, as
// ext4 does on errors, and the spool reports it rather than wedging).
func (s *LogStore) write(work []chunk) error {
	s.mu.Lock()
	align := s.align
	s.mu.Unlock()
	created := false
	var (
		w    *os.File
		wseg *segment
	)
	finish := func() error {
		if w == nil {
			return nil
		}
		err := fdatasync(w)
		s.mu.Lock()
		s.fsyncs++
		s.mu.Unlock()
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		w = nil
		if err != nil {
			return fmt.Errorf("spool: sync segment: %w", err)
		}
		if wseg.f == nil {
			r, err := os.Open(filepath.Join(s.dir, segName(wseg.id)))
			if err != nil {
				return fmt.Errorf("spool: open segment: %w", err)
			}
			s.mu.Lock()
			wseg.f = r
			s.mu.Unlock()
		}
		return nil
	}
	for i, c := range work {
		if c.seg != wseg {
			if err := finish(); err != nil {
				return err
			}
			if c.seg.f == nil {
				created = true
			}
			f, a, err := s.openForWrite(c.seg, c.off, align)
			if err != nil {
				return err
			}
			s.mu.Lock()
			c.seg.dirty = max(c.seg.dirty, dirtyEnd(c.off+int64(len(c.data))))
			s.mu.Unlock()
			align = a
			w, wseg = f, c.seg
		}
		var err error
		if align > 0 {
			work[i].tail, work[i].wrote, err = s.writeDirect(w, c, align)
		} else {
			work[i].wrote, err = w.WriteAt(c.data, c.off)
		}
		if err != nil {
			w.Close()
			w = nil
			if errors.Is(err, unix.ENOSPC) {
				s.relieve()
			}
			return fmt.Errorf("spool: write segment: %w", err)
		}
	}
	if err := finish(); err != nil {
		return err
	}
	if created {
		s.mu.Lock()
		s.fsyncs++
		s.mu.Unlock()
		if err := syncDir(s.dirf); err != nil {
			return fmt.Errorf("spool: sync dir: %w", err)
		}
		// The new segment joins the meta list once its first write is
		// durable (best effort: a segment missing from the list is only
		// not watched for loss).
		s.mu.Lock()
		s.saveMetaLocked()
		s.mu.Unlock()
	}
	return nil
}

// openForWrite opens a segment's file for a group commit: a new segment
// takes its recycled file, or a new preallocated one. It returns the
// alignment to write with, 0 if direct I/O turned out to be refused.
func (s *LogStore) openForWrite(seg *segment, off, align int64) (*os.File, int64, error) {
	flag := os.O_WRONLY
	fresh := seg.f == nil
	path := filepath.Join(s.dir, segName(seg.id))
	recycled := false
	if fresh {
		s.mu.Lock()
		from := seg.recycle
		s.mu.Unlock()
		if from != 0 && off == 0 {
			recycled = os.Rename(filepath.Join(s.dir, freeName(from)), path) == nil
		}
		if !recycled {
			flag |= os.O_CREATE | os.O_TRUNC
		}
	}
	if align > 0 {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil && align > 0 && errors.Is(err, unix.EINVAL) {
		// statx promised direct I/O and open refused it
		// (a stacked filesystem): write through the page
		// cache from now on.
		align = 0
		s.mu.Lock()
		s.align = 0
		s.mu.Unlock()
		f, err = os.OpenFile(path, flag&^unix.O_DIRECT, 0o600)
	}
	if err != nil {
		return nil, align, fmt.Errorf("spool: open segment for writing: %w", err)
	}
	if recycled {
		if fi, err := f.Stat(); err == nil {
			s.mu.Lock()
			seg.alloc = fi.Size()
			s.mu.Unlock()
		}
	} else if fresh {
		// Allocate the whole segment (and its size) once, so that
		// a group commit only writes data: without this every
		// fdatasync also commits an ext4 journal transaction for
		// the new size, ~4x the bytes of a small commit.
		err := unix.Fallocate(int(f.Fd()), 0, 0, s.segBytes)
		switch {
		case err == nil:
			s.mu.Lock()
			seg.alloc = s.segBytes
			s.mu.Unlock()
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		case errors.Is(err, unix.ENOSPC):
			s.relieve()
			// Not room for a whole segment, but maybe for
			// this commit: use the last bytes of the medium
			// before evicting anything (an emergency's own
			// first segment must not cost a segment of
			// positions). A write that does not fit fails
			// below with ENOSPC, and the spool evicts then.
		default:
			f.Close()
			return nil, align, fmt.Errorf("spool: allocate segment: %w", err)
		}
	}
	return f, align, nil
}

// writeDirect writes a chunk with direct I/O: whole sectors from the one
// holding c.off (whose first bytes are the segment's tail) to the one
// holding its end (zero-filled past it, which recovery reads as the clean
// end). It returns the new tail. Only write calls it, one chunk per segment
// at a time, so the segment's tail is stable.
func (s *LogStore) writeDirect(w *os.File, c chunk, align int64) (tail []byte, wrote int, err error) {
	if s.dbuf == nil {
		raw := make([]byte, dioChunk+dioMax)
		skip := int(-uintptr(unsafe.Pointer(&raw[0])) & (dioMax - 1))
		s.dbuf = raw[skip : skip+dioChunk]
	}
	buf := s.dbuf
	s.mu.Lock()
	tail = c.seg.tail
	s.mu.Unlock()
	pos := c.off - int64(len(tail))
	if pos&(align-1) != 0 {
		return nil, 0, fmt.Errorf("segment %s: tail of %d bytes does not reach back to a sector at %d", segName(c.seg.id), len(tail), c.off)
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	n := copy(buf, tail)
	src := c.data
	for {
		k := copy(buf[n:], src)
		src, n = src[k:], n+k
		if len(src) > 0 {
			if _, err := w.WriteAt(buf[:n], pos); err != nil {
				return nil, wrote, err
			}
			pos, n, wrote = pos+int64(n), 0, wrote+n
			continue
		}
		m := (int64(n) + align - 1) &^ (align - 1)
		clear(buf[n:m])
		if _, err := w.WriteAt(buf[:m], pos); err != nil {
			return nil, wrote, err
		}
		return slices.Clone(buf[int64(n)&^(align-1) : n]), wrote + int(m), nil
	}
}

// resync finds the next absolute record frame of the segment (seed) at or
// after from: a frame that passes the seeded checksum and is followed by
// another valid frame, the clean end (zeros) or the end of the file, so
// that stray bytes passing one checksum by chance are not taken for it.
func resync(buf []byte, from int, seed uint32) (int, bool) {
	for p := from; p+6 <= len(buf); p++ {
		// Cheap filter first: a length byte, then the kind byte.
		w := 1
		for w < binary.MaxVarintLen64 && p+4+w <= len(buf) && buf[p+4+w-1]&0x80 != 0 {
			w++
		}
		if p+4+w >= len(buf) || buf[p+4+w]>>4 != frameRecordAbs {
			continue
		}
		fs := frameState{seed: seed}
		_, n, err := decodeFrame(buf[p:], &fs, nil)
		if err != nil {
			continue
		}
		rest := buf[p+n:]
		if len(rest) == 0 || len(bytes.TrimRight(rest[:min(len(rest), 8)], "\x00")) == 0 {
			return p, true
		}
		if _, _, err := decodeFrame(rest, &fs, nil); err == nil {
			return p, true
		}
	}
	return 0, false
}

// markLoss writes loss frames over a damaged region that recovery has
// counted, durably, best effort: the next recovery reads them as counted
// (RecoverStats.PriorLost) rather than counting the damage again.
func markLoss(path string, off int64, frames []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	if _, err := f.WriteAt(frames, off); err == nil {
		fdatasync(f)
	}
	f.Close()
}

// zeroSync overwrites n bytes at off with zeros, durably, best effort.
func zeroSync(path string, off int64, n int) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	if _, err := f.WriteAt(make([]byte, n), off); err == nil {
		fdatasync(f)
	}
	f.Close()
}

// undo forgets a failed write: the records in it are appended again by the
// caller, so the files go back to their last good size.
func (s *LogStore) undo(work []chunk) {
	for _, c := range work {
		c.seg.live -= c.recs
	}
	for _, c := range work {
		seg := c.seg
		if seg.end == seg.written {
			continue
		}
		seg.end = seg.written
		path := filepath.Join(s.dir, segName(seg.id))
		if seg.written == 0 {
			if seg.f != nil {
				seg.f.Close()
				seg.f = nil
			}
			s.removeWiped(path, seg.dirty)
		} else {
			// Best effort: recovery stops at the first bad frame anyway,
			// and the retry overwrites from the same offset.
			zeroSync(path, seg.written, int(min(int64(len(c.data))+c.off-seg.written, s.segBytes)))
		}
	}
	for i := range s.streams {
		s.streams[i].st = s.streams[i].active.stWritten
	}
}

// retireActive starts a new segment when the active one is written, holds
// nothing live and has nothing buffered, so that it can be deleted: on a
// full medium this is often the space the next write needs. Only then:
// online, every record is acknowledged within a second or two, and
// retiring the emptied segment each time cost a new file (allocation,
// directory fsync, unlink) every second (docs/benchmarks.md, footprint).
// Otherwise a segment is appended to until it is full.
func (s *LogStore) retireActive(sm *stream) {
	a := sm.active
	if a == nil || a.written == 0 || a.end != a.written || !(s.pressure && a.live == 0 || s.aged(a)) {
		return
	}
	sm.active = s.newSeg()
	sm.st = sm.active.stWritten
}

// deleteEmpty removes sealed segments with nothing live. The unlink is not
// synced: if it is lost in a crash the records come back as duplicates.
func (s *LogStore) deleteEmpty() {
	if len(s.chunks) == 0 {
		s.retireActive(&s.streams[0])
		s.retireActive(&s.streams[1])
	}
	var drained []*segment
	for id, seg := range s.segs {
		if s.isActive(seg) || seg.live > 0 || seg.end != seg.written {
			continue
		}
		if seg.f != nil {
			drained = append(drained, seg)
		}
		delete(s.segs, id)
	}
	if len(drained) == 0 {
		return
	}
	// The meta list goes first: a segment it still named when its file
	// went would later look lost.
	s.saveMetaLocked()
	for _, seg := range drained {
		seg.f.Close()
		s.retireFile(seg.id, max(seg.written, seg.alloc), max(seg.written, seg.used), seg.dirty)
	}
}

// Read implements Store.
func (s *LogStore) Read(at Loc, size int, dst []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segs[uint32(at>>32)]
	off := int64(at & 0xffffffff)
	if seg == nil || off >= seg.end {
		return dst, fmt.Errorf("spool: no record at %d:%d", at>>32, off)
	}
	var b []byte
	if off >= seg.written {
		for _, list := range [][]chunk{s.writing, s.chunks} {
			for _, c := range list {
				if c.seg == seg && off >= c.off && off < c.off+int64(len(c.data)) {
					b = c.data[off-c.off:]
				}
			}
		}
	} else {
		// Backlog drains read records in order: read ahead a window and
		// serve the following records from it. Written bytes never
		// change, so the window cannot go stale.
		n := min(int64(size+maxFrameHeader), seg.written-off)
		if s.rseg != seg.id || off < s.roff || off+n > s.roff+int64(len(s.rbuf)) {
			w := min(max(n, readAhead), seg.written-off)
			if cap(s.rbuf) < int(w) {
				s.rbuf = make([]byte, w)
			}
			s.rbuf = s.rbuf[:w]
			s.ioMu.RLock()
			_, err := seg.f.ReadAt(s.rbuf, off)
			s.ioMu.RUnlock()
			if err != nil {
				s.rseg = 0
				return dst, fmt.Errorf("spool: read segment %s: %w", segName(seg.id), err)
			}
			s.rseg, s.roff = seg.id, off
		}
		b = s.rbuf[off-s.roff : off-s.roff+n]
	}
	fs := frameState{seed: seg.seed}
	fr, _, err := decodeFrame(b, &fs, nil)
	if err != nil || !fr.isRecord() || len(fr.item.Data) != size {
		return dst, fmt.Errorf("spool: record at %s+%d: %w", segName(seg.id), off, errCorrupt)
	}
	return append(dst, fr.item.Data...), nil
}

// metaFiles are the two copies of the meta record, each with two slots.
// Every SaveMeta writes both, one after the other, so that losing or
// damaging either file (or tearing a write) leaves the latest value in
// the other: the sequence high-water mark and the boot id survive the
// loss of any one file.
var metaFiles = [2]string{"meta", "meta.2"}

// LoadMeta implements Store. A directory without meta files is new; meta
// files with no valid slot are an error, because the sequence high-water
// mark is lost (the Spool then falls back to the highest recovered seq).
func (s *LogStore) LoadMeta() (Meta, error) {
	var (
		best  Meta
		found bool
		seen  bool
		errs  []error
	)
	for _, name := range metaFiles {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		seen = true
		if err != nil {
			errs = append(errs, fmt.Errorf("spool: read %s: %w", name, err))
			continue
		}
		for i := range 2 {
			if len(b) < i*metaSlot+30 {
				continue
			}
			m, ctr, segs, ok := parseMetaSlot(b[i*metaSlot : min(len(b), (i+1)*metaSlot)])
			if ok && (!found || ctr > s.metaCtr) {
				found, s.metaCtr, best, s.metaSegs = true, ctr, m, segs
			}
		}
	}
	switch {
	case found:
		s.lastMeta = best
		return best, nil
	case !seen:
		return Meta{}, nil
	case len(errs) > 0:
		return Meta{}, errors.Join(errs...)
	}
	return Meta{}, fmt.Errorf("spool: meta files have no valid slot: %w", errCorrupt)
}

// parseMetaSlot reads one slot: version 1 (32 bytes) or version 2 (with
// the segment list: uint16 length, then runs of ids as uvarint delta from
// the previous run's end and uvarint count-1, then the CRC32C).
func parseMetaSlot(sl []byte) (Meta, uint64, []uint32, bool) {
	m := Meta{Boot: binary.LittleEndian.Uint32(sl[12:]), NextSeq: binary.LittleEndian.Uint64(sl[16:])}
	ctr := binary.LittleEndian.Uint64(sl[4:])
	switch string(sl[:4]) {
	case metaMagic:
		return m, ctr, nil, len(sl) >= 28 && binary.LittleEndian.Uint32(sl[24:]) == crc32.Checksum(sl[:24], castagnoli)
	case metaMagic2:
		n := int(binary.LittleEndian.Uint16(sl[24:]))
		if 26+n+4 > len(sl) || binary.LittleEndian.Uint32(sl[26+n:]) != crc32.Checksum(sl[:26+n], castagnoli) {
			return m, 0, nil, false
		}
		list := sl[26 : 26+n]
		segs := []uint32{}
		var prev uint64
		for len(list) > 0 {
			d, w1 := binary.Uvarint(list)
			if w1 <= 0 {
				return m, 0, nil, false
			}
			c, w2 := binary.Uvarint(list[w1:])
			if w2 <= 0 || c > 1<<20 {
				return m, 0, nil, false
			}
			list = list[w1+w2:]
			first := prev + d
			for k := range c + 1 {
				segs = append(segs, uint32(first+k))
			}
			prev = first + c + 1
		}
		return m, ctr, segs, true
	}
	return m, 0, nil, false
}

// SaveMeta implements Store: it writes the value, with the list of
// segments that exist, to both meta files in turn, each in the slot the
// counter picks (the slots alternate, so a torn write leaves the previous
// value readable in that file too).
func (s *LogStore) SaveMeta(m Meta) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastMeta = m
	return s.saveMetaLocked()
}

// saveMetaLocked writes lastMeta and the segments that exist now. The
// list is written before a drained segment's file goes, and after a new
// one's first write, so that a segment the list names and the directory
// lacks was lost. Called with mu held.
func (s *LogStore) saveMetaLocked() error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	var ids []uint32
	for id, seg := range s.segs {
		if seg.f != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var list []byte
	var prev uint64
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		list = binary.AppendUvarint(list, uint64(ids[i])-prev)
		list = binary.AppendUvarint(list, uint64(j-i))
		prev = uint64(ids[j]) + 1
		i = j + 1
	}
	s.metaCtr++
	var b []byte
	if 26+len(list)+4 <= metaSlot {
		b = append(b, metaMagic2...)
	} else {
		b = append(b, metaMagic...) // too fragmented to list: no detection
	}
	b = binary.LittleEndian.AppendUint64(b, s.metaCtr)
	b = binary.LittleEndian.AppendUint32(b, s.lastMeta.Boot)
	b = binary.LittleEndian.AppendUint64(b, s.lastMeta.NextSeq)
	if string(b[:4]) == metaMagic2 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(list)))
		b = append(b, list...)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	for _, name := range metaFiles {
		if err := s.writeMeta(name, b, int64(s.metaCtr%2)*metaSlot); err != nil {
			return err
		}
	}
	return nil
}

func (s *LogStore) writeMeta(name string, b []byte, off int64) error {
	path := filepath.Join(s.dir, name)
	_, serr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", name, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("spool: write %s: %w", name, err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("spool: sync %s: %w", name, err)
	}
	if serr != nil {
		if err := syncDir(s.dirf); err != nil {
			return fmt.Errorf("spool: sync dir: %w", err)
		}
	}
	return nil
}

// Reclaimable is the size of the sealed segments with nothing live, which
// the next Sync deletes.
func (s *LogStore) Reclaimable() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, seg := range s.segs {
		if seg.live == 0 && seg.written > 0 && seg.end == seg.written && !s.isActive(seg) {
			n += max(seg.written, seg.alloc)
		}
	}
	return n
}

// InActive reports whether the record at `at` is in a segment still being
// appended to: evicting it frees nothing on the medium yet.
func (s *LogStore) InActive(at Loc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segs[uint32(at>>32)]
	return seg != nil && s.isActive(seg)
}

// Usage implements Store.
func (s *LogStore) Usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, seg := range s.segs {
		n += max(seg.written, seg.alloc)
	}
	for _, f := range s.free {
		n += f.size
	}
	if s.reserveHeld {
		n += s.reserveBytes
	}
	return n
}

// LogStats counts the log's work since it was opened.
type LogStats struct {
	BytesWritten uint64 // handed to write(2)
	Syncs        uint64 // group commits that wrote something
	Fsyncs       uint64 // fdatasync and directory fsync calls (meta file excluded)
	PoolFiles    int    // drained segment files kept for reuse
	PoolBytes    int64  // their size (part of Usage)
	Wiped        uint64 // drained segment files overwritten with zeros before reuse or unlink
	WipedBytes   uint64 // bytes written by those wipes
	WipeErrors   uint64 // wipes the medium refused (the file was unlinked all the same)
}

// Stats reports the log's work so far.
func (s *LogStore) Stats() LogStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := LogStats{BytesWritten: s.bytesWritten, Syncs: s.syncs, Fsyncs: s.fsyncs, PoolFiles: len(s.free),
		Wiped: s.wiped, WipedBytes: s.wipedBytes, WipeErrors: s.wipeErrors}
	for _, f := range s.free {
		st.PoolBytes += f.size
	}
	return st
}

// abandon releases the files without writing anything: what a crash leaves
// behind (tests).
func (s *LogStore) abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, seg := range s.segs {
		if seg.f != nil {
			seg.f.Close()
		}
	}
	s.closeFiles()
}

// Close implements Store: it writes what is buffered, acknowledgements
// included, and releases the directory. Safe twice.
func (s *LogStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	err := s.sync(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, seg := range s.segs {
		if seg.f != nil {
			seg.f.Close()
		}
	}
	s.closeFiles()
	return err
}
