package spool

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The contract every Store, and a Spool on every Store, must keep. Each
// implementation supplies a medium: something that outlives the stores
// opened on it, so that tests can close, crash and reopen.

type medium struct {
	name string
	// open opens a store on the medium; crash abandons one without
	// writing anything more.
	open  func(t *testing.T) Store
	crash func(Store)
}

func media(t *testing.T) []medium {
	dir, bufDir, sealedDir := t.TempDir(), t.TempDir(), t.TempDir()
	disk, sealedDisk := NewMemDisk(0), NewMemDisk(0)
	return []medium{
		{
			name: "log",
			open: func(t *testing.T) Store {
				t.Helper()
				s, err := OpenLog(dir, 4096) // small segments: rotation and deletion get exercised
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			crash: func(s Store) { s.(*LogStore).abandon() },
		},
		{
			// The same log writing through the page cache: what it
			// does where the filesystem offers no direct I/O.
			name:  "log-buffered",
			open:  func(t *testing.T) Store { return openLogBuffered(t, bufDir, 4096) },
			crash: func(s Store) { s.(*LogStore).abandon() },
		},
		{
			name:  "mem",
			open:  func(*testing.T) Store { return OpenMem(disk) },
			crash: func(Store) {},
		},
		{
			// The log with every payload sealed (spool.encrypt).
			name: "log-sealed",
			open: func(t *testing.T) Store {
				t.Helper()
				ls, err := OpenLog(sealedDir, 4096)
				if err != nil {
					t.Fatal(err)
				}
				return mustSeal(t, ls, true)
			},
			crash: func(s Store) { s.(*SealedStore).Store.(*LogStore).abandon() },
		},
		{
			name:  "mem-sealed",
			open:  func(t *testing.T) Store { return mustSeal(t, OpenMem(sealedDisk), true) },
			crash: func(Store) {},
		},
	}
}

// testKey is the key of the sealed media (a test key, never a device's).
var testKey = bytes.Repeat([]byte{0x4b}, KeyBytes)

func mustSeal(t testing.TB, st Store, write bool) *SealedStore {
	t.Helper()
	ss, err := NewSealed(st, testKey, write)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func forEachMedium(t *testing.T, f func(t *testing.T, m medium)) {
	for _, m := range media(t) {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

func payload(seq uint64) []byte {
	return fmt.Appendf(nil, "record %d %s", seq, bytes.Repeat([]byte{byte(seq)}, int(seq%37)))
}

func recoverAll(t *testing.T, s Store) []RecMeta {
	t.Helper()
	var out []RecMeta
	if _, err := s.Recover(func(m RecMeta) { out = append(out, m) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStoreContractRoundTrip(t *testing.T) { forEachMedium(t, storeRoundTrip) }

func storeRoundTrip(t *testing.T, m medium) {
	s := m.open(t)
	recoverAll(t, s)
	const n = 500
	for q := uint64(1); q <= n; q++ {
		// Times go backwards now and then: deltas must be signed.
		it := Item{Seq: q, Priority: kestrel.Priority(q % 4), Time: 1_700_000_000_000 + int64(q*1000) - int64(q%3)*5000, Data: payload(q)}
		if _, err := s.Append(&it); err != nil {
			t.Fatal(err)
		}
		if q%50 == 0 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = m.open(t)
	defer s.Close()
	got := recoverAll(t, s)
	if len(got) != n {
		t.Fatalf("recovered %d records, want %d", len(got), n)
	}
	for i, r := range got {
		q := uint64(i + 1)
		if r.Seq != q || r.Priority != kestrel.Priority(q%4) || r.Time != 1_700_000_000_000+int64(q*1000)-int64(q%3)*5000 {
			t.Fatalf("record %d: got %+v", q, r)
		}
		data, err := s.Read(r.At, r.Size, nil)
		if err != nil || !bytes.Equal(data, payload(q)) {
			t.Fatalf("record %d payload %q, %v", q, data, err)
		}
	}
}

func TestStoreContractDropAndCrash(t *testing.T) { forEachMedium(t, storeDropAndCrash) }

func storeDropAndCrash(t *testing.T, m medium) {
	s := m.open(t)
	recoverAll(t, s)
	locs := map[uint64]Loc{}
	for q := uint64(1); q <= 300; q++ {
		at, err := s.Append(&Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: payload(q)})
		if err != nil {
			t.Fatal(err)
		}
		locs[q] = at
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	before := s.Usage()
	// Acknowledge the first 200 (whole segments) and every third after.
	for q := uint64(1); q <= 300; q++ {
		if q <= 200 || q%3 == 0 {
			s.Drop(q, locs[q])
		}
	}
	// One more synced record carries the acknowledgements.
	if _, err := s.Append(&Item{Seq: 301, Time: 301, Data: payload(301)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	// The log and memory stores give the space back. bbolt never shrinks
	// its file, and copy-on-write makes deletes grow it (one reason it
	// lost, docs/spool.md): only recorded.
	after := s.Usage()
	if ls, ok := baseStore(s).(*LogStore); ok {
		after -= ls.Stats().PoolBytes // drained files kept for reuse
	}
	if m.name == "bbolt" {
		t.Logf("bbolt file %d bytes after dropping two thirds, was %d", after, before)
	} else if after >= before {
		t.Errorf("usage %d after dropping two thirds, was %d: nothing freed", after, before)
	}
	// Unsynced: may or may not survive; must not damage anything.
	s.Append(&Item{Seq: 302, Time: 302, Data: payload(302)})
	m.crash(s)

	s = m.open(t)
	defer s.Close()
	got := recoverAll(t, s)
	seen := map[uint64]bool{}
	for _, r := range got {
		if seen[r.Seq] {
			t.Fatalf("seq %d recovered twice", r.Seq)
		}
		seen[r.Seq] = true
		if r.Seq <= 200 || r.Seq%3 == 0 && r.Seq <= 300 {
			t.Errorf("seq %d was dropped and synced, but came back", r.Seq)
		}
	}
	for q := uint64(201); q <= 301; q++ {
		if q%3 != 0 && !seen[q] {
			t.Errorf("synced seq %d lost", q)
		}
	}
}

func TestStoreContractMeta(t *testing.T) { forEachMedium(t, storeMeta) }

func storeMeta(t *testing.T, m medium) {
	s := m.open(t)
	if me, err := s.LoadMeta(); err != nil || me != (Meta{}) {
		t.Fatalf("fresh meta %+v, %v", me, err)
	}
	for i := range uint64(5) {
		if err := s.SaveMeta(Meta{Boot: uint32(i), NextSeq: 1000 * i}); err != nil {
			t.Fatal(err)
		}
	}
	m.crash(s)
	s = m.open(t)
	defer s.Close()
	if me, err := s.LoadMeta(); err != nil || me != (Meta{Boot: 4, NextSeq: 4000}) {
		t.Fatalf("meta after crash %+v, %v", me, err)
	}
}

// ---- the Spool on each medium ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.UnixMilli(1_750_000_000_000)} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openSpool(t *testing.T, m medium, o Options) *Spool {
	t.Helper()
	s, err := OpenStore(m.open(t), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appendN(t *testing.T, s *Spool, c *fakeClock, p kestrel.Priority, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: p, Time: c.Now().UnixMilli(), Data: payload(q)}); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, q)
	}
	return seqs
}

func seqsOf(items []Item) []uint64 {
	out := make([]uint64, len(items))
	for i, it := range items {
		out[i] = it.Seq
	}
	return out
}

func TestSpoolContractOrder(t *testing.T) { forEachMedium(t, spoolOrder) }

func spoolOrder(t *testing.T, m medium) {
	c := newClock()
	s := openSpool(t, m, Options{Now: c.Now, LiveWindow: 10 * time.Second, SyncInterval: time.Hour})
	defer s.Close()
	oldN := appendN(t, s, c, kestrel.PriorityNormal, 3)
	oldB := appendN(t, s, c, kestrel.PriorityBulk, 2)
	c.Add(time.Minute) // the above is backlog now
	liveB := appendN(t, s, c, kestrel.PriorityBulk, 2)
	liveN := appendN(t, s, c, kestrel.PriorityNormal, 3)
	high := appendN(t, s, c, kestrel.PriorityHigh, 2)
	emerg := appendN(t, s, c, kestrel.PriorityEmergency, 2)

	var want []uint64
	want = append(want, emerg...)
	want = append(want, high...)
	want = append(want, liveN[2], liveN[1], liveN[0])
	want = append(want, liveB[1], liveB[0])
	want = append(want, oldN...)
	want = append(want, oldB...)

	got := seqsOf(s.Take(nil, 100, 0))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
	if more := s.Take(nil, 100, 0); len(more) != 0 {
		t.Fatalf("in-flight records taken twice: %v", seqsOf(more))
	}
	// Release puts them back in their places; a batch limit splits the order.
	s.Release(got)
	if b := seqsOf(s.Take(nil, 3, 0)); fmt.Sprint(b) != fmt.Sprint(want[:3]) {
		t.Fatalf("after release got %v, want %v", b, want[:3])
	}
	// A byte limit: always at least one record.
	if b := s.Take(nil, 100, 1); len(b) != 1 || b[0].Seq != want[3] {
		t.Fatalf("byte-limited take %v", seqsOf(b))
	}
}

func TestSpoolContractCommitReopen(t *testing.T) { forEachMedium(t, spoolCommitReopen) }

func spoolCommitReopen(t *testing.T, m medium) {
	c := newClock()
	o := Options{Now: c.Now, SyncInterval: time.Hour, SeqBlock: 16}
	s := openSpool(t, m, o)
	boot := s.Boot()
	seqs := appendN(t, s, c, kestrel.PriorityNormal, 40)
	items := s.Take(nil, 100, 0)
	for _, it := range items {
		if !bytes.Equal(it.Data, payload(it.Seq)) {
			t.Fatalf("seq %d payload %q", it.Seq, it.Data)
		}
	}
	// Half acknowledged, half lost with the connection.
	var acked, back []uint64
	for i, q := range seqsOf(items) {
		if i%2 == 0 {
			acked = append(acked, q)
		} else {
			back = append(back, q)
		}
	}
	s.Commit(acked)
	s.Release(back)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openSpool(t, m, o)
	defer s.Close()
	if s.Boot() != boot+1 {
		t.Errorf("boot %d after %d", s.Boot(), boot)
	}
	if q := s.NextSeq(); q <= seqs[len(seqs)-1] {
		t.Errorf("seq %d reused after reopen (last was %d)", q, seqs[len(seqs)-1])
	}
	// Recovered records are backlog: oldest first.
	slices.Sort(back)
	got := s.Take(nil, 100, 0)
	if fmt.Sprint(seqsOf(got)) != fmt.Sprint(back) {
		t.Fatalf("after reopen got %v, want the released %v", seqsOf(got), back)
	}
	for _, it := range got {
		if !bytes.Equal(it.Data, payload(it.Seq)) || it.Priority != kestrel.PriorityNormal {
			t.Fatalf("seq %d came back as %+v", it.Seq, it)
		}
	}
	if mt := s.Metrics(); mt.Recovered != len(back) || mt.Boot != s.Boot() {
		t.Errorf("metrics %+v", mt)
	}
}

func TestSpoolContractCrashKeepsDurable(t *testing.T) { forEachMedium(t, spoolCrashKeepsDurable) }

func spoolCrashKeepsDurable(t *testing.T, m medium) {
	c := newClock()
	o := Options{Now: c.Now, SyncInterval: time.Hour, SeqBlock: 8}
	st := m.open(t)
	s, err := OpenStore(st, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Emergency: synced at once, even with an hour's interval.
	q := s.NextSeq()
	tk, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityEmergency, Time: 1, Data: payload(q)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tk.Durable():
	case <-time.After(10 * time.Second):
		t.Fatal("emergency record not synced at once")
	}
	if tk.Err() != nil {
		t.Fatal(tk.Err())
	}
	var last uint64
	for range 20 {
		last = s.NextSeq()
	}
	// Crash: no Close.
	s.cancel()
	s.wg.Wait()
	m.crash(st)

	s = openSpool(t, m, o)
	defer s.Close()
	got := s.Take(nil, 10, 0)
	if len(got) != 1 || got[0].Seq != q || !bytes.Equal(got[0].Data, payload(q)) {
		t.Fatalf("after crash got %v, want the emergency record %d", seqsOf(got), q)
	}
	if n := s.NextSeq(); n <= last {
		t.Fatalf("seq %d handed out again after a crash (had reached %d)", n, last)
	}
}

func TestSpoolContractEviction(t *testing.T) { forEachMedium(t, spoolEviction) }

func spoolEviction(t *testing.T, m medium) {
	c := newClock()
	per := int64(len(payload(1))) + recOverhead // payload(q) sizes vary; use fixed data below
	_ = per
	data := bytes.Repeat([]byte("x"), 90) // 100 bytes charged each
	// 700 bytes for the other lanes, 300 for emergency records.
	o := Options{Now: c.Now, SyncInterval: time.Hour, MaxBytes: 1000, EmergencyBytes: 300, MaxAge: time.Hour}
	s := openSpool(t, m, o)
	defer s.Close()
	add := func(p kestrel.Priority) (uint64, error) {
		q := s.NextSeq()
		_, err := s.Append(Item{Seq: q, Priority: p, Time: c.Now().UnixMilli(), Data: data})
		return q, err
	}
	var bulk, normal, emerg []uint64
	for range 3 {
		q, _ := add(kestrel.PriorityBulk)
		bulk = append(bulk, q)
	}
	for range 4 {
		q, _ := add(kestrel.PriorityNormal)
		normal = append(normal, q)
	}
	for range 3 {
		q, _ := add(kestrel.PriorityEmergency)
		emerg = append(emerg, q)
	}
	// Full. A normal record evicts the oldest bulk one.
	n1, err := add(kestrel.PriorityNormal)
	if err != nil {
		t.Fatal(err)
	}
	// A bulk record evicts the next oldest bulk one.
	b1, err := add(kestrel.PriorityBulk)
	if err != nil {
		t.Fatal(err)
	}
	mt := s.Metrics()
	if mt.Lanes[kestrel.PriorityBulk].Evicted != 2 || mt.Bytes > 1000 {
		t.Fatalf("after two evictions: %+v", mt)
	}
	// Two more normal: the last old bulk goes, then the new bulk,
	// then the oldest normal.
	add(kestrel.PriorityNormal)
	add(kestrel.PriorityNormal)
	add(kestrel.PriorityNormal)
	left := map[uint64]bool{}
	for _, q := range seqsOf(s.Take(nil, 100, 0)) {
		left[q] = true
	}
	for _, q := range append(bulk, b1, normal[0]) {
		if left[q] {
			t.Errorf("seq %d should have been evicted", q)
		}
	}
	for _, q := range append(append([]uint64{n1}, normal[1:]...), emerg...) {
		if !left[q] {
			t.Errorf("seq %d evicted out of policy", q)
		}
	}
	// Emergency records have their own budget and are never evicted:
	// past it the next one is refused, and nothing else goes for it.
	s.Release(seqsOf(s.Take(nil, 100, 0)))
	before := s.Metrics()
	if _, err := add(kestrel.PriorityEmergency); !errors.Is(err, ErrFull) {
		t.Fatalf("emergency over its budget: %v, want ErrFull", err)
	}
	mt = s.Metrics()
	if mt.Lanes[kestrel.PriorityEmergency].Records != 3 || mt.Evicted != before.Evicted || mt.Records != before.Records {
		t.Fatalf("emergency over its budget changed the spool: %+v", mt)
	}
	// Age: everything but emergency goes after MaxAge.
	c.Add(2 * time.Hour)
	s.expire()
	mt = s.Metrics()
	if mt.Records != 3 || mt.Lanes[kestrel.PriorityEmergency].Records != 3 {
		t.Fatalf("after MaxAge: %+v", mt.Lanes)
	}
	if mt.OldestAge < 2*time.Hour {
		t.Errorf("oldest age %v", mt.OldestAge)
	}
}

func TestSpoolContractFailingStorage(t *testing.T) {
	disk := NewMemDisk(0)
	c := newClock()
	s, err := OpenStore(OpenMem(disk), Options{Now: c.Now, SyncInterval: time.Hour, MemBytes: 2000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	disk.SetFailure(fmt.Errorf("medium: %w", syscall.EROFS))
	q := s.NextSeq()
	tk, _ := s.Append(Item{Seq: q, Priority: kestrel.PriorityEmergency, Time: 1, Data: payload(q)})
	<-tk.Durable()
	if !errors.Is(tk.Err(), syscall.EROFS) {
		t.Fatalf("ticket error %v, want EROFS", tk.Err())
	}
	if h := s.Health(); h.State != HealthReadOnly || !errors.Is(h.Err, syscall.EROFS) {
		t.Fatalf("health %v %v", h.State, h.Err)
	}
	// Live data still flows from memory, bounded by MemBytes.
	appendN(t, s, c, kestrel.PriorityNormal, 100)
	s.syncOnce()
	mt := s.Metrics()
	if mt.MemoryBytes > 2000+100 || mt.Evicted == 0 {
		t.Fatalf("memory not bounded: %+v", mt)
	}
	got := s.Take(nil, 1000, 0)
	if len(got) < 10 || got[0].Seq != q {
		t.Fatalf("took %v while storage failed", seqsOf(got))
	}
	s.Release(seqsOf(got))
	// Healed: the held records become durable, health is OK again.
	disk.SetFailure(nil)
	s.syncOnce()
	if h := s.Health(); h.State != HealthOK || h.Err != nil {
		t.Fatalf("health after healing %v %v", h.State, h.Err)
	}
	if mt := s.Metrics(); mt.MemoryBytes != 0 || mt.StoreBytes == 0 {
		t.Fatalf("after healing: %+v", mt)
	}
}

func TestSpoolContractDiskFullMem(t *testing.T) {
	// The same policy as the tmpfs test (diskfull_test.go), without root.
	disk := NewMemDisk(4000)
	c := newClock()
	s, err := OpenStore(OpenMem(disk), Options{Now: c.Now, SyncInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("y"), 84) // 100 bytes on the MemDisk
	var emerg []uint64
	for i := range 200 {
		p := kestrel.PriorityBulk
		switch {
		case i%10 == 0:
			p = kestrel.PriorityEmergency
		case i%2 == 0:
			p = kestrel.PriorityNormal
		}
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: p, Time: int64(i), Data: data}); err != nil {
			t.Fatal(err)
		}
		if p == kestrel.PriorityEmergency {
			emerg = append(emerg, q)
		}
		s.syncOnce()
	}
	mt := s.Metrics()
	if mt.Evicted == 0 || mt.Lanes[kestrel.PriorityEmergency].Records != 20 {
		t.Fatalf("disk full: %+v", mt)
	}
	if mt.Lanes[kestrel.PriorityBulk].Records != 0 && mt.Lanes[kestrel.PriorityNormal].Evicted > 0 {
		t.Fatalf("normal evicted while bulk remained: %+v", mt.Lanes)
	}
	if mt.StoreBytes > 4000 {
		t.Fatalf("store holds %d bytes on a 4000-byte disk", mt.StoreBytes)
	}
}

func TestSpoolTickerAndReady(t *testing.T) {
	s, err := OpenStore(OpenMem(NewMemDisk(0)), Options{SyncInterval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := s.NextSeq()
	tk, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityBulk, Time: 1, Data: payload(q)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled by an append")
	}
	select {
	case <-tk.Durable():
	case <-time.After(10 * time.Second):
		t.Fatal("the group-commit ticker never made the record durable")
	}
	if tk.Err() != nil {
		t.Fatal(tk.Err())
	}
	if _, err := s.Append(Item{Seq: q, Data: []byte("again")}); err == nil {
		t.Fatal("a duplicate sequence number was accepted")
	}
	got := s.Take(nil, 10, 0)
	s.Release(seqsOf(got))
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled by a release")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(Item{Seq: q + 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
	if got := s.Take(nil, 10, 0); len(got) != 0 {
		t.Fatalf("take after Close: %v", seqsOf(got))
	}
}
