package powercut

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
)

// encodeLog writes a dm-log-writes log as the kernel lays it out
// (drivers/md/dm-log-writes.c): the super, then per entry a sector of
// header (with a mark's label) followed by the data sectors.
func encodeLog(ss int, ents []Entry, data [][]byte) []byte {
	le := binary.LittleEndian
	b := make([]byte, ss)
	le.PutUint64(b[0:], logMagic)
	le.PutUint64(b[8:], logVersion)
	le.PutUint64(b[16:], uint64(len(ents)))
	le.PutUint32(b[24:], uint32(ss))
	for i, e := range ents {
		h := make([]byte, ss)
		le.PutUint64(h[0:], e.Sector)
		le.PutUint64(h[8:], e.Sectors)
		le.PutUint64(h[16:], e.Flags)
		le.PutUint64(h[24:], uint64(len(e.Mark)))
		copy(h[32:], e.Mark)
		b = append(b, h...)
		if e.Flags&FlagDiscard == 0 {
			b = append(b, data[i]...)
		}
	}
	return b
}

func sampleLog() ([]byte, []Entry) {
	ents := []Entry{
		{Sector: 2, Sectors: 1},
		{Flags: FlagFlush},
		{Sector: 0, Sectors: 2, Flags: FlagFUA},
		{Flags: FlagMark, Mark: "e7"},
		{Sector: 2, Sectors: 1, Flags: FlagDiscard},
	}
	data := [][]byte{bytes.Repeat([]byte{1}, 512), nil, bytes.Repeat([]byte{2}, 1024), nil, nil}
	return encodeLog(512, ents, data), ents
}

func TestParseLog(t *testing.T) {
	raw, want := sampleLog()
	wl, err := ParseLog(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if len(wl.Entries) != len(want) || wl.SectorSize != 512 {
		t.Fatalf("%d entries, sector size %d", len(wl.Entries), wl.SectorSize)
	}
	for i := range want {
		g := wl.Entries[i]
		if g.Sector != want[i].Sector || g.Sectors != want[i].Sectors || g.Flags != want[i].Flags || g.Mark != want[i].Mark {
			t.Errorf("entry %d: %+v, want %+v", i, g, want[i])
		}
	}
	img := make(memImage, 2048)
	for i := range wl.Entries {
		if _, err := wl.Apply(&wl.Entries[i], img, nil); err != nil {
			t.Fatal(err)
		}
	}
	exp := append(append(bytes.Repeat([]byte{2}, 1024), make([]byte, 512)...), make([]byte, 512)...)
	if !bytes.Equal(img, exp) {
		t.Fatalf("replayed image differs")
	}
	for _, cut := range []int{10, 600, len(raw) - 1} {
		if _, err := ParseLog(bytes.NewReader(raw[:cut]), int64(cut)); err == nil {
			t.Errorf("log cut at %d bytes parsed without error", cut)
		}
	}
}

func FuzzParseLog(f *testing.F) {
	raw, _ := sampleLog()
	f.Add(raw)
	f.Add(raw[:512])
	f.Fuzz(func(t *testing.T, b []byte) {
		wl, err := ParseLog(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		img := make(memImage, 4096)
		for i := range wl.Entries {
			wl.Apply(&wl.Entries[i], img, nil) // may refuse, must not panic
		}
	})
}

// TestPlanStates: a crash state keeps every FUA write before it, only
// writes after its last flush are subject to loss, and the budget holds.
func TestPlanStates(t *testing.T) {
	var ents []Entry
	for i := range 300 {
		switch {
		case i%10 == 9:
			ents = append(ents, Entry{Flags: FlagFlush})
		case i%7 == 3:
			ents = append(ents, Entry{Sector: uint64(i), Sectors: 1, Flags: FlagFUA})
		default:
			ents = append(ents, Entry{Sector: uint64(i), Sectors: 1})
		}
	}
	wl := &WriteLog{SectorSize: 512, Entries: ents}
	states := planStates(wl, 100, newRand(1))
	if len(states) != 100 {
		t.Fatalf("%d states, want 100", len(states))
	}
	kinds := map[string]int{}
	for _, st := range states {
		kinds[st.kind]++
		if st.flush > 0 && ents[st.flush].Flags&FlagFlush == 0 || st.flush >= st.p {
			t.Fatalf("state %+v: flush index is not a flush before p", st)
		}
		for i := st.flush + 1; i < st.p; i++ {
			if ents[i].Flags&FlagFlush != 0 {
				t.Fatalf("state %+v: a later flush %d before p", st, i)
			}
		}
		for _, k := range st.keep {
			if k < st.flush || k >= st.p || ents[k].Flags&FlagFUA != 0 {
				t.Fatalf("state %+v keeps %d", st, k)
			}
		}
		if !slices.IsSorted(st.keep) {
			t.Fatalf("state %+v: keep not in log order", st)
		}
	}
	for _, k := range []string{"flush", "all but one", "random subset", "prefix"} {
		if kinds[k] == 0 {
			t.Errorf("no %q states: %v", k, kinds)
		}
	}
}

// TestFrameScan checks the checker's own reading of segment files against
// what the spool writes: every record appended and synced is found.
func TestFrameScan(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.Options{SegmentBytes: 16 << 10, SyncInterval: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]bool{}
	for i := range 200 {
		q := s.NextSeq()
		p := kestrel.Priority(i % 4)
		tk, err := s.Append(spool.Item{Seq: q, Priority: p, Time: int64(i), Data: payload(q, p)})
		if err != nil {
			t.Fatal(err)
		}
		<-tk.Durable()
		want[q] = true
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	found, err := intactFrames(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		delete(want, f.seq)
	}
	if len(want) > 0 {
		ents, _ := os.ReadDir(dir)
		t.Fatalf("%d records not found by the frame scan (found %d) in %v", len(want), len(found), ents)
	}
	if q, p, ok := parsePayload(payload(12345, kestrel.PriorityBulk)); !ok || q != 12345 || p != kestrel.PriorityBulk {
		t.Fatal("payload does not name its record")
	}
}
