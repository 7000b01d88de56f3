package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// writeLog builds a log of n records in one segment and returns the
// segment's path and each record's end offset.
func writeLog(t testing.TB, dir string, n int) (string, []int64) {
	t.Helper()
	s, err := OpenLog(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recover(func(RecMeta) {}); err != nil {
		t.Fatal(err)
	}
	var ends []int64
	for q := uint64(1); q <= uint64(n); q++ {
		if _, err := s.Append(&Item{Seq: q, Priority: kestrel.Priority(q % 3), Time: int64(q) * 1000, Data: payload(q)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, s.streams[0].active.written)
	}
	path := filepath.Join(dir, segName(s.streams[0].active.id))
	s.abandon()
	return path, ends
}

// A power cut can leave a segment cut at any byte. Recovery must keep every
// record that ends before the cut, drop the rest, count the damage, and
// leave a store that works.
func TestRecoveryTornAtEveryByte(t *testing.T) {
	src := t.TempDir()
	path, ends := writeLog(t, src, 12)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	full = full[:ends[len(ends)-1]] // the rest is the segment's preallocated zeros
	dir := t.TempDir()
	seg := filepath.Join(dir, filepath.Base(path))
	for cut := 0; cut <= len(full); cut++ {
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o700)
		if err := os.WriteFile(seg, full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenLog(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var got []RecMeta
		st, err := s.Recover(func(m RecMeta) { got = append(got, m) })
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		want := 0
		for _, e := range ends {
			if e <= int64(cut) {
				want++
			}
		}
		if len(got) != want {
			t.Fatalf("cut at %d: recovered %d records, want %d", cut, len(got), want)
		}
		atBoundary := cut == 0 || cut == segHeaderLen || want > 0 && ends[want-1] == int64(cut)
		// A cut that leaves only zero bytes of the next frame looks like
		// the preallocated end of the segment: nothing to count.
		last := int64(segHeaderLen)
		if want > 0 {
			last = ends[want-1]
		}
		if cut > int(last) && len(bytes.TrimRight(full[last:cut], "\x00")) == 0 {
			atBoundary = true
		}
		if atBoundary != (st.Dropped == 0) {
			t.Fatalf("cut at %d: dropped %d regions (boundary %v)", cut, st.Dropped, atBoundary)
		}
		for i, m := range got {
			q := uint64(i + 1)
			d, err := s.Read(m.At, m.Size, nil)
			if m.Seq != q || err != nil || !bytes.Equal(d, payload(q)) {
				t.Fatalf("cut at %d: record %d: %+v %q %v", cut, q, m, d, err)
			}
		}
		if cut%17 != 0 {
			s.abandon()
			continue
		}
		// The store goes on working after the damage.
		if _, err := s.Append(&Item{Seq: 1000, Data: []byte("after")}); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// A flipped bit in the middle of a sealed segment: recovery resynchronises
// at the next group commit, so only the damaged record is lost; it counts
// that record by seq range, marks the damage so that the next recovery
// does not count it again, and nothing panics. It used to drop every later
// frame of the segment and count "1 region".
func TestRecoveryCorruptMiddle(t *testing.T) {
	src := t.TempDir()
	path, ends := writeLog(t, src, 40) // one record per group commit
	full, _ := os.ReadFile(path)
	full = full[:ends[len(ends)-1]]
	for _, at := range []int{segHeaderLen + 1, int(ends[9]) + 2, int(ends[29]) + 7, len(full) - 1} {
		b := bytes.Clone(full)
		b[at] ^= 0x10
		os.WriteFile(path, b, 0o600)
		hit := 0 // index of the damaged record
		for hit < len(ends) && ends[hit] <= int64(at) {
			hit++
		}
		last := hit == len(ends)-1
		for pass := range 2 {
			s, err := OpenLog(src, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			st, err := s.Recover(func(m RecMeta) { seqs = append(seqs, m.Seq) })
			if err != nil {
				t.Fatal(err)
			}
			s.abandon()
			want := 39
			if len(seqs) != want || slices.Contains(seqs, uint64(hit+1)) {
				t.Fatalf("flip at %d (record %d), pass %d: recovered %d records %v, want all but %d",
					at, hit+1, pass, len(seqs), seqs, hit+1)
			}
			switch {
			case pass == 0 && last:
				// A damaged last frame is a torn tail: a region, its
				// records unknown.
				if st.Dropped != 1 {
					t.Fatalf("flip in the last frame: %+v", st)
				}
			case pass == 0:
				if st.Dropped != 1 || st.LostRecords != 1 || len(st.Lost) != 1 ||
					st.Lost[0].First > uint64(hit+1) || st.Lost[0].Last < uint64(hit+1) {
					t.Fatalf("flip at %d (record %d): %+v", at, hit+1, st)
				}
			default: // counted once
				if st.Dropped != 0 || st.LostRecords != 0 || !last && st.PriorLost != 1 {
					t.Fatalf("flip at %d, second recovery counted again: %+v", at, st)
				}
			}
		}
		os.WriteFile(path, full, 0o600)
	}
}

// Group commits of many records: a flip loses the rest of that commit
// only, counted exactly (by the ordinal of the next commit's first record).
func TestRecoveryCountsLostRecordsOfACommit(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 1<<20)
	var ends []int64
	for q := uint64(1); q <= 100; q++ {
		s.Append(&Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: payload(q)})
		if q%10 == 0 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			ends = append(ends, s.streams[0].active.written)
		}
	}
	path := filepath.Join(dir, segName(s.streams[0].active.id))
	s.abandon()
	b, _ := os.ReadFile(path)
	// The 4th commit holds seqs 31..40; flip a bit a little way into it
	// (its 3rd record or so): the records from there to 40 are lost.
	at := int(ends[2]) + 150
	b[at] ^= 0x01
	os.WriteFile(path, b, 0o600)
	s2, got, st := reopenLog(t, dir)
	defer s2.Close()
	lost := 100 - len(got)
	if lost == 0 || lost > 10 || st.LostRecords != lost || len(st.Lost) != 1 || st.Lost[0].Last != 40 {
		t.Fatalf("recovered %d of 100, stats %+v", len(got), st)
	}
	for q := uint64(41); q <= 100; q++ {
		if got[q] == nil {
			t.Fatalf("seq %d, in a later commit, lost", q)
		}
	}
}

// A flipped bit in a recycled segment (a device in service writes over
// drained files): recovery must not take the damage for the old frames
// behind the segment's end, and must keep and count as before.
func TestRecoveryBitFlipInRecycledSegment(t *testing.T) {
	dir := t.TempDir()
	s := openEmpty(t, dir, 64<<10)
	var seq uint64
	fill := func(n, size, per int) map[uint64]Loc {
		locs := make(map[uint64]Loc)
		for i := range n {
			seq++
			at, err := s.Append(&Item{Seq: seq, Priority: kestrel.PriorityNormal, Time: int64(seq), Data: bytes.Repeat([]byte{byte(seq)}, size)})
			if err != nil {
				t.Fatal(err)
			}
			locs[seq] = at
			if i%per == per-1 {
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		s.Sync()
		return locs
	}
	old := fill(1500, 90, 10) // about two segments
	for q, at := range old {
		s.Drop(q, at)
	}
	fill(1, 90, 1)
	s.Sync()
	if s.Stats().PoolFiles == 0 {
		t.Fatal("no file in the pool")
	}
	fresh := fill(1500, 40, 10) // into a new segment, written over a recycled file
	var a *segment
	for _, seg := range s.segs {
		if seg.recycle != 0 && seg.written > 4096 {
			a = seg
		}
	}
	if a == nil {
		t.Fatal("no segment was written over a recycled file")
	}
	path := filepath.Join(dir, segName(a.id))
	end := a.written
	s.abandon()
	b, _ := os.ReadFile(path)
	b[end/3] ^= 0x40
	os.WriteFile(path, b, 0o600)
	s2, got, st := reopenLog(t, dir)
	defer s2.Close()
	missing := 0
	for q := range fresh {
		if got[q] == nil {
			missing++
		}
	}
	for q := range old {
		if got[q] != nil {
			t.Fatalf("old seq %d came back", q)
		}
	}
	if missing == 0 || missing > 10 || st.LostRecords != missing || st.Dropped != 1 {
		t.Fatalf("%d of %d records missing after one flipped bit; stats %+v", missing, len(fresh), st)
	}
}

// Version 2 segments (before resynchronisation) are still read.
func TestVersion2SegmentsStillRead(t *testing.T) {
	dir := t.TempDir()
	const id = 5
	seg := appendSegHeader(nil, id, 0)
	seg[4] = 2
	binary.LittleEndian.PutUint32(seg[12:], crc32.Checksum(seg[:12], castagnoli))
	fs := frameState{seed: segSeed(id)}
	for q := uint64(1); q <= 20; q++ {
		seg = appendRecordFrame(seg, &fs, &Item{Seq: q, Time: int64(q), Data: payload(q)})
	}
	seg = appendAckFrame(seg, fs.seed, []seqRun{{3, 2}})
	os.WriteFile(filepath.Join(dir, segName(id)), seg, 0o600)
	s, got, st := reopenLog(t, dir)
	defer s.Close()
	if len(got) != 18 || got[3] != nil || !bytes.Equal(got[20], payload(20)) || st.Dropped != 0 {
		t.Fatalf("version 2 segment: %d records, %+v", len(got), st)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	var st frameState
	f.Add(appendRecordFrame(nil, &st, &Item{Seq: 7, Time: -5, Data: []byte("hello")}))
	f.Add(appendAckFrame(nil, 0, []seqRun{{1, 3}, {10, 1}}))
	abs := frameState{abs: true, n: 9}
	f.Add(appendRecordFrame(nil, &abs, &Item{Seq: 1 << 40, Time: 1_750_000_000_000, Data: []byte("resync")}))
	f.Add(appendLossFrame(nil, 0, 40, 3, 10, 12))
	f.Add(appendPadFrame(nil, 0, minPad))
	f.Add(appendPadFrame(nil, 0, 600))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var st frameState
		for len(b) > 0 {
			fr, n, err := decodeFrame(b, &st, nil)
			if err != nil {
				return
			}
			if n <= 0 || n > len(b) || fr.typ == frameRecord && len(fr.item.Data) > MaxPayload {
				t.Fatalf("bad frame length %d of %d", n, len(b))
			}
			b = b[n:]
		}
	})
}

// FuzzRecover feeds arbitrary segment contents to recovery: it must never
// panic, and every record it reports must read back.
func FuzzRecover(f *testing.F) {
	src := f.TempDir()
	path, _ := writeLog(f, src, 5)
	good, _ := os.ReadFile(path)
	good = bytes.TrimRight(good, "\x00")
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(appendSegHeader(nil, 1, 0))
	f.Fuzz(func(t *testing.T, body []byte) {
		dir := t.TempDir()
		data := body
		if len(body) > 0 && body[0]&1 == 0 {
			// Keep a valid header most of the time so frames get parsed.
			data = append(appendSegHeader(nil, 1, 0), body...)
		}
		os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600)
		s, err := OpenLog(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var metas []RecMeta
		if _, err := s.Recover(func(m RecMeta) { metas = append(metas, m) }); err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			if _, err := s.Read(m.At, m.Size, nil); err != nil {
				t.Fatalf("recovered %+v unreadable: %v", m, err)
			}
		}
	})
}

// A meta file lost or corrupted must not let a sequence number come back,
// not even one whose record was acknowledged and is gone.
func TestRecoveryLostMetaNeverReusesSeq(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncInterval: time.Hour, SegmentBytes: 1 << 20}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for range 50 {
		last = s.NextSeq()
		s.Append(Item{Seq: last, Priority: kestrel.PriorityNormal, Time: 1, Data: payload(last)})
	}
	s.syncOnce()
	// The newest ones are acknowledged: only ack frames remember them.
	items := s.Take(nil, 10, 0)
	s.Commit(seqsOf(items))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range metaFiles { // both copies
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{0xee}, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if q := s.NextSeq(); q <= last {
		t.Fatalf("after losing the meta file, seq %d handed out again (had reached %d)", q, last)
	}
}

// On an empty spool nothing but the meta files remembers the boot id and
// the sequence high-water mark: losing or damaging any one of them must
// not let (boot, seq) start again.
func TestMetaSurvivesLossOfAnyOneFile(t *testing.T) {
	for _, name := range metaFiles {
		for _, damage := range []string{"deleted", "zeroed", "torn"} {
			t.Run(name+"/"+damage, func(t *testing.T) {
				dir := t.TempDir()
				o := Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10, SeqBlock: 16}
				var boot uint32
				var last uint64
				for range 3 { // a few boots, all records delivered
					s, err := Open(dir, o, nil)
					if err != nil {
						t.Fatal(err)
					}
					boot = s.Boot()
					for range 40 {
						last = s.NextSeq()
						s.Append(Item{Seq: last, Priority: kestrel.PriorityNormal, Time: 1, Data: payload(last)})
					}
					s.syncOnce()
					s.Commit(seqsOf(s.Take(nil, 100, 0)))
					s.syncOnce()
					s.store.(*LogStore).abandon() // a crash: no clean Close
				}
				path := filepath.Join(dir, name)
				switch damage {
				case "deleted":
					os.Remove(path)
				case "zeroed":
					os.WriteFile(path, make([]byte, 2*metaSlot), 0o600)
				case "torn":
					b, _ := os.ReadFile(path)
					os.WriteFile(path, b[:len(b)/2], 0o600)
				}
				s, err := Open(dir, o, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if s.Boot() <= boot {
					t.Fatalf("boot %d after boot %d", s.Boot(), boot)
				}
				if q := s.NextSeq(); q <= last {
					t.Fatalf("seq %d handed out again (had reached %d)", q, last)
				}
			})
		}
	}
}

// A segment file deleted from the middle of the log (a flash block gone,
// a stray rm) is detected from the meta list of segments and counted,
// once. It used to count nothing.
func TestRecoveryMissingSegment(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncInterval: time.Hour, SegmentBytes: 4096}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		q := s.NextSeq()
		s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: 1, Data: payload(q)})
		if q%20 == 0 {
			s.syncOnce()
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(segs) < 4 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	os.Remove(segs[len(segs)/2])
	for pass, want := range []int{1, 0} {
		s, err = Open(dir, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := s.Metrics()
		s.Close()
		if m.RecoveryMissingSegments != want {
			t.Fatalf("pass %d: %d missing segments, want %d (%d records back)", pass, m.RecoveryMissingSegments, want, m.Recovered)
		}
	}
}

// FuzzRecoverDamage damages a segment of ten group commits anywhere (a run
// of bytes XORed): recovery must never panic nor invent a record; every
// group commit the damage does not touch comes back whole; and unless the
// damage reaches the last commit, every record is either recovered or
// counted lost.
func FuzzRecoverDamage(f *testing.F) {
	src := f.TempDir()
	s := openEmpty(f, src, 1<<20)
	var ends []int64 // end of each commit
	want := map[uint64][]byte{}
	commitOf := map[uint64]int{}
	for q := uint64(1); q <= 80; q++ {
		d := bytes.Repeat([]byte{byte(q)}, int(q*7%50)+1)
		want[q], commitOf[q] = d, len(ends)
		s.Append(&Item{Seq: q, Priority: kestrel.Priority(q % 3), Time: int64(q) * 100, Data: d})
		if q%8 == 0 {
			if err := s.Sync(); err != nil {
				f.Fatal(err)
			}
			ends = append(ends, s.streams[0].active.written)
		}
	}
	path := filepath.Join(src, segName(s.streams[0].active.id))
	s.abandon()
	good, _ := os.ReadFile(path)
	good = good[:ends[len(ends)-1]]
	f.Add(uint16(40), uint8(0), byte(1))
	f.Add(uint16(ends[3]+3), uint8(20), byte(0xff))
	f.Add(uint16(ends[4]-1), uint8(2), byte(0x80))
	f.Add(uint16(ends[0]), uint8(31), byte(0x5a))
	f.Fuzz(func(t *testing.T, off uint16, n uint8, x byte) {
		if x == 0 {
			x = 1
		}
		from := segHeaderLen + int(off)%(len(good)-segHeaderLen)
		to := min(from+int(n%32)+1, len(good))
		b := bytes.Clone(good)
		for i := from; i < to; i++ {
			b[i] ^= x
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o600)
		s, got, st := reopenLog(t, dir)
		s.abandon()
		for q, d := range got {
			if !bytes.Equal(d, want[q]) {
				t.Fatalf("seq %d recovered with a payload it never had", q)
			}
		}
		start := func(c int) int64 {
			if c == 0 {
				return segHeaderLen
			}
			return ends[c-1]
		}
		for q := range want {
			c := commitOf[q]
			if (int64(to) <= start(c) || int64(from) >= ends[c]) && got[q] == nil {
				t.Fatalf("damage at [%d,%d) lost seq %d of untouched commit %d", from, to, q, c)
			}
		}
		if int64(to) <= start(len(ends)-1) && len(got)+st.LostRecords != len(want) {
			t.Fatalf("damage at [%d,%d): %d recovered + %d counted lost, of %d", from, to, len(got), st.LostRecords, len(want))
		}
	})
}
