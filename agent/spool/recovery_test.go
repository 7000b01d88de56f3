package spool

import (
	"bytes"
	"os"
	"path/filepath"
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

// A flipped bit in the middle of a sealed segment: the records before it
// survive, the damage is counted, nothing panics.
func TestRecoveryCorruptMiddle(t *testing.T) {
	src := t.TempDir()
	path, ends := writeLog(t, src, 40)
	full, _ := os.ReadFile(path)
	full = full[:ends[len(ends)-1]]
	for _, at := range []int{segHeaderLen + 1, int(ends[9]) + 2, int(ends[29]) + 7, len(full) - 1} {
		b := bytes.Clone(full)
		b[at] ^= 0x10
		os.WriteFile(path, b, 0o600)
		s, err := OpenLog(src, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		st, err := s.Recover(func(RecMeta) { n++ })
		if err != nil || st.Dropped != 1 {
			t.Fatalf("flip at %d: %v, %+v", at, err, st)
		}
		want := 0
		for _, e := range ends {
			if e <= int64(at) {
				want++
			}
		}
		if n != want {
			t.Fatalf("flip at %d: %d records, want %d", at, n, want)
		}
		s.abandon()
		os.WriteFile(path, full, 0o600)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	var st frameState
	f.Add(appendRecordFrame(nil, &st, &Item{Seq: 7, Time: -5, Data: []byte("hello")}))
	f.Add(appendAckFrame(nil, 0, []seqRun{{1, 3}, {10, 1}}))
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
