package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

// openDirect opens a log in a fresh directory and skips unless the
// filesystem offers direct I/O (ext4, xfs, btrfs do; the test's TMPDIR
// decides).
func openDirect(t *testing.T, dir string, segBytes int64) *LogStore {
	t.Helper()
	s := openEmpty(t, dir, segBytes)
	if !s.DirectIO() {
		s.Close()
		t.Skipf("%s: no direct I/O on this filesystem", dir)
	}
	return s
}

// openEmpty opens a log in an empty directory, ready for appends.
func openEmpty(t testing.TB, dir string, segBytes int64) *LogStore {
	t.Helper()
	s, err := OpenLog(dir, segBytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recover(func(RecMeta) {}); err != nil {
		t.Fatal(err)
	}
	return s
}

func reopenLog(t *testing.T, dir string) (*LogStore, map[uint64][]byte, RecoverStats) {
	t.Helper()
	s, err := OpenLog(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	var metas []RecMeta
	st, err := s.Recover(func(m RecMeta) { metas = append(metas, m) })
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[uint64][]byte)
	for _, m := range metas {
		b, err := s.Read(m.At, m.Size, nil)
		if err != nil {
			t.Fatalf("seq %d: %v", m.Seq, err)
		}
		got[m.Seq] = b
	}
	return s, got, st
}

// TestDirectTrickleWritesSectors is the target at its hardest
// rate: ten 40-byte records per 1 s group commit (400 payload bytes) must
// cost at most 1.5 bytes handed to the medium per payload byte. Through
// the page cache every commit costs a 4 KiB page (about 11).
func TestDirectTrickleWritesSectors(t *testing.T) {
	dir := t.TempDir()
	s := openDirect(t, dir, 0)
	want := make(map[uint64][]byte)
	var seq uint64
	var payloadBytes int
	const commits = 300
	for range commits {
		for range 10 {
			seq++
			p := bytes.Repeat([]byte{byte(seq)}, 40)
			if _, err := s.Append(&Item{Seq: seq, Priority: kestrel.PriorityNormal, Time: int64(seq) * 100, Data: p}); err != nil {
				t.Fatal(err)
			}
			want[seq] = p
			payloadBytes += len(p)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	s.abandon()
	wa := float64(st.BytesWritten) / float64(payloadBytes)
	t.Logf("%d commits of 400 payload bytes: %d bytes written, %.2f per payload byte", commits, st.BytesWritten, wa)
	if wa > 1.5 {
		t.Errorf("write amplification %.2f, want <= 1.5", wa)
	}
	_, got, rst := reopenLog(t, dir)
	if len(got) != len(want) || rst.Dropped != 0 {
		t.Fatalf("recovered %d of %d records, %d regions dropped", len(got), len(want), rst.Dropped)
	}
	for q, p := range want {
		if !bytes.Equal(got[q], p) {
			t.Fatalf("seq %d: got %x want %x", q, got[q], p)
		}
	}
}

// TestDirectMixedCommitsRecover mixes the three shapes a direct commit can
// take (padded to the sector, rewriting an unpadded partial sector, and a
// commit larger than the write buffer) with acknowledgements, across
// segment rotations, then checks that recovery returns exactly the live
// records and that every frame boundary is where the writer put it.
func TestDirectMixedCommitsRecover(t *testing.T) {
	dir := t.TempDir()
	s := openDirect(t, dir, 1<<20)
	want := make(map[uint64][]byte)
	locs := make(map[uint64]Loc)
	var seq uint64
	sizes := []int{1, 40, 3, 700, 5000, 40, 2}
	for round := range 60 {
		n := 1 + round%7
		if round%20 == 19 {
			n = 400 // 400 x 700..5000 B spans several dioChunk buffers
		}
		for i := range n {
			seq++
			p := bytes.Repeat([]byte{byte(seq), byte(seq >> 8)}, sizes[(round+i)%len(sizes)])
			at, err := s.Append(&Item{Seq: seq, Priority: kestrel.Priority(seq % 4), Time: int64(seq), Data: p})
			if err != nil {
				t.Fatal(err)
			}
			want[seq], locs[seq] = p, at
		}
		for q := range want {
			if q%5 == 0 {
				s.Drop(q, locs[q])
				delete(want, q)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s2, got, rst := reopenLog(t, dir)
	defer s2.Close()
	if rst.Dropped != 0 {
		t.Fatalf("recovery cut %d regions (%d bytes) from a clean log", rst.Dropped, rst.DroppedBytes)
	}
	if len(got) != len(want) {
		t.Fatalf("recovered %d records, want %d", len(got), len(want))
	}
	for q, p := range want {
		if !bytes.Equal(got[q], p) {
			t.Fatalf("seq %d differs after recovery", q)
		}
	}
}

// TestForeignFramesNeverPass copies valid frames of one segment behind
// the clean end of another: the checksum seed makes them invalid there, so
// recovery cuts them (counted) instead of taking them as records.
func TestForeignFramesNeverPass(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 4096)
	for q := uint64(1); q <= 200; q++ {
		s.Append(&Item{Seq: q, Priority: kestrel.PriorityNormal, Data: bytes.Repeat([]byte{'x'}, 30)})
		if q%20 == 0 {
			s.Sync()
		}
	}
	s.Close()
	a, _ := os.ReadFile(filepath.Join(dir, segName(1)))
	b, _ := os.ReadFile(filepath.Join(dir, segName(2)))
	a = bytes.TrimRight(a, "\x00")
	end := len(bytes.TrimRight(b, "\x00"))
	b = append(b[:end], a[segHeaderLen:]...)
	if err := os.WriteFile(filepath.Join(dir, segName(2)), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, got, rst := reopenLog(t, dir)
	defer s2.Close()
	if len(got) != 200 {
		t.Fatalf("recovered %d records, want 200 (no foreign ones)", len(got))
	}
	if rst.Dropped != 1 {
		t.Fatalf("dropped regions %d, want the foreign tail counted once", rst.Dropped)
	}
}

// TestVersion1SegmentsStillRead writes a segment the way the first
// release did (version 1 header, unseeded checksums, no pad frames): an
// upgraded agent must recover it.
func TestVersion1SegmentsStillRead(t *testing.T) {
	dir := t.TempDir()
	seg := appendSegHeader(nil, 1, 0)
	seg[4] = 1
	binary.LittleEndian.PutUint32(seg[12:], crc32.Checksum(seg[:12], castagnoli))
	var st frameState
	for q := uint64(1); q <= 5; q++ {
		seg = appendRecordFrame(seg, &st, &Item{Seq: q, Priority: kestrel.PriorityHigh, Time: int64(q), Data: []byte{byte(q)}})
	}
	seg = appendAckFrame(seg, 0, []seqRun{{first: 2, n: 1}})
	seg = append(seg, make([]byte, 1000)...)
	if err := os.WriteFile(filepath.Join(dir, segName(1)), seg, 0o600); err != nil {
		t.Fatal(err)
	}
	s, got, rst := reopenLog(t, dir)
	defer s.Close()
	if len(got) != 4 || got[2] != nil || !bytes.Equal(got[5], []byte{5}) || rst.Dropped != 0 {
		t.Fatalf("recovered %v (stats %+v), want seqs 1,3,4,5", got, rst)
	}
}

// TestRecycledSegments drains a log so that its segment files go to the
// pool, then writes fewer records over them and crashes: recovery must
// return exactly the new records, take the old frames behind them for the
// clean end (not a torn write), and the files must have been reused rather
// than created.
func TestRecycledSegments(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 8192)
	var seq uint64
	fill := func(n int, size int) map[uint64]Loc {
		locs := make(map[uint64]Loc)
		for range n {
			seq++
			at, err := s.Append(&Item{Seq: seq, Priority: kestrel.PriorityNormal, Time: int64(seq), Data: bytes.Repeat([]byte{byte(seq)}, size)})
			if err != nil {
				t.Fatal(err)
			}
			locs[seq] = at
			if seq%7 == 0 {
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		return locs
	}
	old := fill(600, 90) // about 60 kB: several 8 kB segments
	for q, at := range old {
		s.Drop(q, at)
	}
	fill(1, 90) // carries the acknowledgements; the drained files go to the pool
	s.Sync()
	pool := s.Stats().PoolFiles
	if pool == 0 {
		t.Fatal("no drained segment file kept for reuse")
	}
	files := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		return len(m)
	}
	before := files()
	fresh := fill(300, 30) // a third of what the files held
	if files() != before {
		t.Fatalf("%d files after writing over the pool, was %d: new files were created", files(), before)
	}
	if got := s.Stats().PoolFiles; got >= pool {
		t.Fatalf("pool still has %d files (had %d): none was reused", got, pool)
	}
	s.abandon()

	s2, got, rst := reopenLog(t, dir)
	defer s2.Close()
	if rst.Dropped != 0 {
		t.Fatalf("recovery counted %d torn regions (%d bytes): old frames of recycled files are not torn writes", rst.Dropped, rst.DroppedBytes)
	}
	if len(got) != len(fresh)+1 {
		t.Fatalf("recovered %d records, want %d", len(got), len(fresh)+1)
	}
	for q := range fresh {
		if !bytes.Equal(got[q], bytes.Repeat([]byte{byte(q)}, 30)) {
			t.Fatalf("seq %d differs", q)
		}
	}
	for q := range old {
		if got[q] != nil {
			t.Fatalf("old seq %d came back from a recycled file", q)
		}
	}
}

// TestRecycledFileWithoutNewHeader is a crash between renaming a pool file
// to its new segment name and writing the new header: the file still has
// its old header, so it holds nothing and goes back to the pool.
func TestRecycledFileWithoutNewHeader(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 4096)
	for q := uint64(1); q <= 10; q++ {
		s.Append(&Item{Seq: q, Data: []byte("old record")})
	}
	s.Sync()
	s.abandon()
	if err := os.Rename(filepath.Join(dir, segName(1)), filepath.Join(dir, segName(7))); err != nil {
		t.Fatal(err)
	}
	s2, got, rst := reopenLog(t, dir)
	defer s2.Close()
	if len(got) != 0 || rst.Dropped != 0 {
		t.Fatalf("recovered %d records, %d dropped regions, want none", len(got), rst.Dropped)
	}
	if st := s2.Stats(); st.PoolFiles != 1 {
		t.Fatalf("pool has %d files, want the orphan back in it", st.PoolFiles)
	}
	if s2.nextID <= 7 {
		t.Fatalf("next segment id %d would reuse a pooled file's id", s2.nextID)
	}
}

// TestOnlineKeepsOneSegment is the agent online: every second's records are
// written, then acknowledged before the next group commit. The log must keep
// appending to one segment file, not start a new file (an allocation, a
// directory fsync and an unlink on flash) each time the active one empties.
func TestOnlineKeepsOneSegment(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 0)
	var seq uint64
	for range 100 {
		var locs []Loc
		var seqs []uint64
		for range 10 {
			seq++
			at, err := s.Append(&Item{Seq: seq, Priority: kestrel.PriorityNormal, Data: bytes.Repeat([]byte{1}, 40)})
			if err != nil {
				t.Fatal(err)
			}
			locs, seqs = append(locs, at), append(seqs, seq)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := range seqs {
			s.Drop(seqs[i], locs[i])
		}
		if err := s.Sync(); err != nil { // nothing new: the acks wait for the next records
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	free, _ := filepath.Glob(filepath.Join(dir, "free-*.log"))
	st := s.Stats()
	s.Close()
	if len(segs) != 1 || len(free) != 0 || s.nextID > 3 {
		t.Fatalf("after 100 acknowledged seconds: %d segment files, %d pooled, next id %d: want one file, appended to", len(segs), len(free), s.nextID)
	}
	if st.Fsyncs > st.Syncs+2 {
		t.Fatalf("%d fsyncs for %d group commits: directory fsyncs for new files", st.Fsyncs, st.Syncs)
	}
	_, got, _ := reopenLog(t, dir)
	if len(got) != 0 {
		t.Fatalf("%d acknowledged records came back", len(got))
	}
}
