package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/loopfs"
)

// Real media faults, on a small tmpfs the test mounts (root only).

func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (run as root, as .ci/run does)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("mount tmpfs refused: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestDiskFull fills a small medium four times over: a tmpfs (writes go
// through the page cache) and an ext4 on a loop device (direct I/O, the
// path a real eMMC takes).
func TestDiskFull(t *testing.T) {
	t.Run("tmpfs", func(t *testing.T) { diskFull(t, mountTmpfs(t, "2m"), false) })
	t.Run("ext4-direct", func(t *testing.T) {
		mnt, _ := loopfs.Ext4(t, "6M", "-b", "4096", "-m", "0", "-N", "64")
		diskFull(t, mnt, true)
	})
}

func diskFull(t *testing.T, mnt string, direct bool) {
	dir := filepath.Join(mnt, "spool")
	o := Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10, MaxBytes: 64 << 20}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[bool]string{true: "direct", false: "page-cache"}[direct]
	if w := s.Metrics().Writes; w != want {
		s.Close()
		if direct && w == "page-cache" {
			t.Skip("this kernel's ext4 offers no direct I/O (statx STATX_DIOALIGN needs Linux 6.1)")
		}
		t.Fatalf("spool writes %q, want %q on this medium", w, want)
	}
	data := bytes.Repeat([]byte("p"), 200)
	var emerg []uint64
	sawFull := false
	const n = 20000 // 4 MB of payload into 2 MB
	var last []uint64
	for i := range n {
		p := kestrel.PriorityBulk
		switch {
		case i%100 == 0:
			p = kestrel.PriorityEmergency
		case i%3 == 0:
			p = kestrel.PriorityNormal
		}
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: p, Time: int64(i), Data: data}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if p == kestrel.PriorityEmergency {
			emerg = append(emerg, q)
		}
		if i >= n-50 && p != kestrel.PriorityBulk {
			last = append(last, q) // the newest normal ones: bulk may go first
		}
		if i%50 == 49 {
			s.syncOnce()
			if h := s.Health(); h.State == HealthFull {
				sawFull = true
				if !errors.Is(h.Err, syscall.ENOSPC) {
					t.Fatalf("full with error %v", h.Err)
				}
			} else if h.State != HealthOK {
				t.Fatalf("health %v: %v", h.State, h.Err)
			}
		}
	}
	m := s.Metrics()
	t.Logf("after %d records: %d held, %d evicted (bulk %d, normal %d), store %d bytes, health %v",
		n, m.Records, m.Evicted, m.Lanes[kestrel.PriorityBulk].Evicted, m.Lanes[kestrel.PriorityNormal].Evicted,
		m.StoreBytes, m.Health.State)
	if !sawFull || m.Evicted == 0 {
		t.Fatalf("2 MB tmpfs never reported full (evicted %d)", m.Evicted)
	}
	// Bulk goes before normal: the bulk records left are the ones appended
	// since the last eviction. Emergency appends start group commits of
	// their own in the background, so allow a few batches of 50 (a broken
	// policy keeps thousands).
	if m.Lanes[kestrel.PriorityNormal].Evicted > 0 && m.Lanes[kestrel.PriorityBulk].Records > 400 {
		t.Fatalf("normal records evicted while %d bulk ones were kept", m.Lanes[kestrel.PriorityBulk].Records)
	}
	if m.Lanes[kestrel.PriorityEmergency].Evicted != 0 || m.Lanes[kestrel.PriorityEmergency].Records != len(emerg) {
		t.Fatalf("emergency records evicted: %+v", m.Lanes[kestrel.PriorityEmergency])
	}
	if m.MemoryBytes != 0 {
		t.Fatalf("%d bytes still only in memory after the last sync: the spool stopped writing", m.MemoryBytes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Everything it held is on the medium and comes back.
	s, err = Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[uint64]bool{}
	for _, it := range s.Take(nil, 1<<30, 0) {
		got[it.Seq] = true
	}
	if len(got) != m.Records {
		t.Fatalf("reopened with %d records, held %d", len(got), m.Records)
	}
	for _, q := range append(emerg, last...) {
		if !got[q] {
			t.Fatalf("seq %d (emergency or newest normal) missing after reopen", q)
		}
	}
}

func TestReadOnlyTmpfs(t *testing.T) {
	mnt := mountTmpfs(t, "2m")
	dir := filepath.Join(mnt, "spool")
	o := Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := newClock()
	before := appendN(t, s, c, kestrel.PriorityNormal, 20)
	s.syncOnce()
	remount := func(flags uintptr) {
		t.Helper()
		var err error
		for range 50 { // EBUSY while a group commit has a file open for writing
			if err = unix.Mount("", mnt, "", unix.MS_REMOUNT|flags, ""); err == nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("remount: %v", err)
	}
	remount(unix.MS_RDONLY)
	q := s.NextSeq()
	tk, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityEmergency, Time: 1, Data: payload(q)})
	if err != nil {
		t.Fatal(err)
	}
	<-tk.Durable()
	if !errors.Is(tk.Err(), syscall.EROFS) {
		t.Fatalf("ticket on a read-only medium: %v", tk.Err())
	}
	h := s.Health()
	if h.State != HealthReadOnly || !errors.Is(h.Err, syscall.EROFS) {
		t.Fatalf("health %v, %v", h.State, h.Err)
	}
	t.Logf("read-only medium reported as %q: %v", h.State, h.Err)
	after := appendN(t, s, c, kestrel.PriorityNormal, 20)
	s.syncOnce()
	// Live data still flows: everything, old and new, can be taken.
	got := seqsOf(s.Take(nil, 1000, 0))
	if len(got) != 41 || got[0] != q {
		t.Fatalf("took %v from a read-only spool", got)
	}
	s.Release(got)
	// The medium comes back: the held records are written.
	remount(0)
	s.syncOnce()
	if h := s.Health(); h.State != HealthOK {
		t.Fatalf("health after remount rw: %v %v", h.State, h.Err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := len(s.Take(nil, 1000, 0))
	s.Close()
	if n != len(before)+1+len(after) {
		t.Fatalf("reopened with %d records, want %d", n, len(before)+1+len(after))
	}
}

func TestOpenReadOnlyMediumFallsBackToMemory(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(mnt, "spool"), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h := s.Health(); h.State != HealthReadOnly {
		t.Fatalf("health %v %v", h.State, h.Err)
	}
	c := newClock()
	seqs := appendN(t, s, c, kestrel.PriorityHigh, 3)
	s.syncOnce()
	if h := s.Health(); h.State != HealthReadOnly {
		t.Fatalf("memory-only spool reports %v after a group commit", h.State)
	}
	if got := seqsOf(s.Take(nil, 10, 0)); len(got) != 3 || got[0] != seqs[0] {
		t.Fatalf("memory-only spool gave %v", got)
	}
}

// A backlog waiting in memory that is larger than the free space must not
// stop the spool writing: emergencies go first (the reserve is theirs),
// then whatever fits, and memory is shed by policy. It used to retry the
// whole backlog at every group commit, fail with ENOSPC each time, and
// write nothing at all, emergencies included.
func TestDiskFullBelowBacklog(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "spool")
	o := Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10, MaxBytes: 64 << 20, MemBytes: 2 << 20}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("b"), 200)
	for i := range 10000 { // 2 MB of backlog in memory, for a 1 MB medium
		p := kestrel.PriorityBulk
		if i%2 == 0 {
			p = kestrel.PriorityNormal
		}
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: p, Time: int64(i), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	var emerg []uint64
	for round := range 3 {
		q := s.NextSeq()
		tk, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityEmergency, Time: 1, Data: []byte("officer down")})
		if err != nil {
			t.Fatal(err)
		}
		emerg = append(emerg, q)
		select {
		case <-tk.Durable():
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: emergency ticket never closed", round)
		}
		if err := tk.Err(); err != nil {
			t.Fatalf("round %d: emergency not written on a full medium: %v", round, err)
		}
		// More backlog arrives; memory stays bounded by policy.
		for i := range 2000 {
			q := s.NextSeq()
			s.Append(Item{Seq: q, Priority: kestrel.Priority(i % 2), Time: int64(i), Data: data})
		}
		s.syncOnce()
	}
	m := s.Metrics()
	t.Logf("held %d records, %d bytes only in memory, store %d bytes, evicted %d (bulk %d, normal %d), health %v",
		m.Records, m.MemoryBytes, m.StoreBytes, m.Evicted, m.Lanes[kestrel.PriorityBulk].Evicted,
		m.Lanes[kestrel.PriorityNormal].Evicted, m.Health.State)
	if m.StoreBytes < 512<<10 {
		t.Fatalf("only %d bytes written on a 1 MB medium: the spool stopped writing", m.StoreBytes)
	}
	if m.MemoryBytes > o.MemBytes+int64(len(data)) {
		t.Fatalf("%d bytes in memory, bound %d", m.MemoryBytes, o.MemBytes)
	}
	s.store.(*LogStore).abandon() // a power cut: what was durable must be there
	s.cancel()
	s.wg.Wait()
	s2, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got := map[uint64]bool{}
	for _, it := range s2.Take(nil, 1<<30, 0) {
		got[it.Seq] = true
	}
	for _, q := range emerg {
		if !got[q] {
			t.Fatalf("emergency %d lost", q)
		}
	}
	if len(got) < 1000 {
		t.Fatalf("only %d records came back from the full medium", len(got))
	}
}

// The medium filled to the last byte by something else: the emergency
// reserve taken at Open is released for the emergency, which is written.
func TestEmergencyReserveOnAFullMedium(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "spool")
	s, err := Open(dir, Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10, MaxBytes: 64 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Create(filepath.Join(mnt, "hog"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break // full
		}
	}
	f.Close()
	q := s.NextSeq()
	tk, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityEmergency, Time: 1, Data: []byte("officer down")})
	if err != nil {
		t.Fatal(err)
	}
	<-tk.Durable()
	if err := tk.Err(); err != nil {
		t.Fatalf("emergency not written on a medium full to the last byte: %v", err)
	}
}
