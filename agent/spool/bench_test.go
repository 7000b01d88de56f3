package spool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/loopfs"
)

// Benchmarks (go test -bench . -benchmem ./agent/spool) and the storage
// measurements behind docs/spool.md (KESTREL_SPOOL_MEASURE=1 go test -run
// Measure -v ./agent/spool; root: it mounts an ext4 loop device so that the
// device's own write counter, journal included, can be read).

type storeMaker struct {
	name string
	open func(tb testing.TB, dir string) Store
}

var makers = []storeMaker{
	{"log", func(tb testing.TB, dir string) Store {
		s, err := OpenLog(dir, 0)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}},
	{"bbolt", func(tb testing.TB, dir string) Store { return openBolt(tb, dir) }},
}

// logBuffered is the log writing through the page cache, as it does where
// the filesystem offers no direct I/O (and as it did before it used it).
var logBuffered = storeMaker{"log (page cache)", func(tb testing.TB, dir string) Store {
	return openLogBuffered(tb, dir, 0)
}}

// openLogBuffered opens a log that writes through the page cache even where
// direct I/O is offered.
func openLogBuffered(tb testing.TB, dir string, segBytes int64) *LogStore {
	tb.Helper()
	s, err := OpenLog(dir, segBytes)
	if err != nil {
		tb.Fatal(err)
	}
	s.align = 0
	return s
}

func benchSpool(tb testing.TB, mk storeMaker, dir string) *Spool {
	s, err := OpenStore(mk.open(tb, dir), Options{SyncInterval: time.Hour, MaxBytes: 4 << 30}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

var data40 = bytes.Repeat([]byte{0xa5}, 40)

// BenchmarkAppend: one 40-byte record per op. The group commits (one per
// 1000 records) run with the timer stopped: BenchmarkGroupCommit has them.
func BenchmarkAppend(b *testing.B) {
	for _, mk := range makers {
		b.Run(mk.name, func(b *testing.B) {
			s := benchSpool(b, mk, b.TempDir())
			defer s.Close()
			b.SetBytes(40)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				q := s.NextSeq()
				if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: data40}); err != nil {
					b.Fatal(err)
				}
				if i%1000 == 999 {
					b.StopTimer()
					s.syncOnce()
					b.StartTimer()
				}
			}
		})
	}
}

// BenchmarkGroupCommit: one group commit of 1000 40-byte records per op
// (write + fdatasync on the test's filesystem).
func BenchmarkGroupCommit(b *testing.B) {
	for _, mk := range makers {
		b.Run(mk.name, func(b *testing.B) {
			s := benchSpool(b, mk, b.TempDir())
			defer s.Close()
			b.SetBytes(40 * 1000)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for range 1000 {
					q := s.NextSeq()
					s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: data40})
				}
				b.StartTimer()
				s.syncOnce()
			}
		})
	}
}

// BenchmarkDrain: take 64 records and commit them, per op; the records are
// durable backlog, read back from the medium.
func BenchmarkDrain(b *testing.B) {
	for _, mk := range makers {
		b.Run(mk.name, func(b *testing.B) {
			s := benchSpool(b, mk, b.TempDir())
			defer s.Close()
			for range b.N * 64 {
				q := s.NextSeq()
				s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: data40})
			}
			s.syncOnce()
			s.mu.Lock()
			for i := range s.lanes[kestrel.PriorityNormal].ents {
				s.lanes[kestrel.PriorityNormal].ents[i].at = 0 // all backlog
			}
			s.mu.Unlock()
			var items []Item
			seqs := make([]uint64, 0, 64)
			b.SetBytes(64 * 40)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				items = s.Take(items, 64, 0)
				if len(items) != 64 {
					b.Fatalf("took %d", len(items))
				}
				seqs = seqs[:0]
				for _, it := range items {
					seqs = append(seqs, it.Seq)
				}
				s.Commit(seqs)
			}
			b.StopTimer()
			s.syncOnce()
		})
	}
}

// BenchmarkRecovery: open a spool of 100,000 records (40-byte payloads).
func BenchmarkRecovery(b *testing.B) {
	for _, mk := range makers {
		b.Run(mk.name, func(b *testing.B) {
			dir := b.TempDir()
			s := benchSpool(b, mk, dir)
			for range 100_000 {
				q := s.NextSeq()
				s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: data40})
			}
			s.Close()
			b.ReportAllocs()
			for b.Loop() {
				s := benchSpool(b, mk, dir)
				if s.Metrics().Records != 100_000 {
					b.Fatal("records lost")
				}
				s.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/record")
		})
	}
}

// ---- measurements for docs/spool.md ----

func procWriteBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Fatal("no write_bytes in /proc/self/io")
	return 0
}

// devWriteBytes reads the device's sectors-written counter (journal and
// metadata included); "" dev means unknown.
func devWriteBytes(dev string) int64 {
	if dev == "" {
		return -1
	}
	b, err := os.ReadFile("/sys/block/" + dev + "/stat")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	n, _ := strconv.ParseInt(f[6], 10, 64)
	return n * 512
}

type workload struct {
	name    string
	rate    int // records per second
	size    int // payload bytes
	seconds int
	ackLag  int // seconds until acknowledged; -1 never (offline), 0 before the group commit, -2 just after it
	// warm, if set, is a backlog of that many payload bytes built and
	// drained twice before measuring: a device in service, whose log
	// writes over recycled segment files.
	warm int
}

type waResult struct {
	payload, proc, dev int64
	fsyncs, commits    uint64
}

// runWorkload drives a spool second by second of simulated time: the
// records of one second, then (if online) the acknowledgements due, then
// the group commit that the 1 s ticker would run. The kernel sees the same
// writes and fsyncs as in real time.
func runWorkload(t *testing.T, mk storeMaker, dir, dev string, w workload) waResult {
	st := mk.open(t, dir)
	s, err := OpenStore(st, Options{SyncInterval: time.Hour, MaxBytes: 4 << 30}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0x5a}, w.size)
	var res waResult
	var sent [][]uint64
	// Two outages, each built and drained: the first leaves its sealed
	// segments in the pool, the second fills the first's active segment
	// and then writes over pooled files, so that the measured records land
	// in a recycled file, as on a device in service.
	rounds := 0
	if w.warm > 0 {
		rounds = 2
	}
	for range rounds {
		for n := 0; n < w.warm; n += w.size {
			q := s.NextSeq()
			if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Data: payload}); err != nil {
				t.Fatal(err)
			}
			if q%10000 == 0 {
				s.syncOnce()
			}
		}
		s.syncOnce()
		var seqs []uint64
		for _, it := range s.Take(nil, 1<<30, 0) {
			seqs = append(seqs, it.Seq)
		}
		s.Commit(seqs)
		q := s.NextSeq()
		s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Data: payload}) // carries the acknowledgements
		s.syncOnce()
		s.Commit([]uint64{q})
		s.syncOnce()
	}
	exec.Command("sync").Run()
	p0, d0 := procWriteBytes(t), devWriteBytes(dev)
	var f0 uint64
	if ls, ok := st.(*LogStore); ok {
		f0 = ls.Stats().Fsyncs
	}
	var items []Item
	for sec := range w.seconds {
		for range w.rate {
			q := s.NextSeq()
			copy(payload, strconv.AppendUint(nil, q, 10))
			if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(sec) * 1000, Data: payload}); err != nil {
				t.Fatal(err)
			}
			res.payload += int64(w.size)
		}
		if w.ackLag == -2 {
			items = s.Take(items, 1<<30, 0)
			s.syncOnce()
			seqs := make([]uint64, len(items))
			for i, it := range items {
				seqs[i] = it.Seq
			}
			s.Commit(seqs)
			res.commits++
			continue
		}
		if w.ackLag >= 0 {
			items = s.Take(items, 1<<30, 0)
			seqs := make([]uint64, len(items))
			for i, it := range items {
				seqs[i] = it.Seq
			}
			sent = append(sent, seqs)
			if len(sent) > w.ackLag {
				s.Commit(sent[0])
				sent = sent[1:]
			}
		}
		s.syncOnce()
		res.commits++
	}
	s.syncOnce()
	exec.Command("sync").Run()
	res.proc = procWriteBytes(t) - p0
	if d0 >= 0 {
		res.dev = devWriteBytes(dev) - d0
	} else {
		res.dev = -1
	}
	if ls, ok := st.(*LogStore); ok {
		res.fsyncs = ls.Stats().Fsyncs - f0
	}
	s.cancel()
	s.wg.Wait()
	st.Close()
	return res
}

func TestMeasureWriteAmplification(t *testing.T) {
	if os.Getenv("KESTREL_SPOOL_MEASURE") == "" {
		t.Skip("set KESTREL_SPOOL_MEASURE=1 (slow; root mounts a loop ext4)")
	}
	mnt, dev := loopfs.Ext4(t, "512M")
	workloads := []workload{
		{"offline, 10 rec/s x 40 B", 10, 40, 300, -1, 0},
		{"offline, 100 rec/s x 40 B", 100, 40, 120, -1, 0},
		{"offline, 400 rec/s x 40 B", 400, 40, 60, -1, 0},
		{"offline burst, 1000 rec/s x 40 B", 1000, 40, 60, -1, 0},
		{"offline, 10 rec/s x 400 B", 10, 400, 300, -1, 0},
		{"online, 10 rec/s x 40 B, acked < 1 s", 10, 40, 300, 0, 0},
		{"online, 10 rec/s x 40 B, acked just after the group commit", 10, 40, 300, -2, 0},
		{"slow link, 10 rec/s x 40 B, acked after 2 s", 10, 40, 300, 2, 0},
		{"offline, 10 rec/s x 40 B, after two drained 8 MiB outages", 10, 40, 300, -1, 8 << 20},
		{"offline, 100 rec/s x 40 B, after two drained 8 MiB outages", 100, 40, 120, -1, 8 << 20},
		{"offline burst, 1000 rec/s x 40 B, after two drained 8 MiB outages", 1000, 40, 60, -1, 8 << 20},
		{"online, 10 rec/s x 40 B, acked just after the group commit, after two drained 8 MiB outages", 10, 40, 300, -2, 8 << 20},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n| workload (1 s group commit) | store | payload | write_bytes (/proc/self/io) | per payload byte | device bytes (loop, journal incl.) | per payload byte | fsyncs/s |\n|---|---|---|---|---|---|---|---|\n")
	for _, w := range workloads {
		for _, mk := range append([]storeMaker{makers[0], logBuffered}, makers[1:]...) {
			dir := filepath.Join(mnt, fmt.Sprintf("%d", time.Now().UnixNano()))
			r := runWorkload(t, mk, dir, dev, w)
			fs := "2/commit (bbolt: data, meta)"
			if mk.name != "bbolt" {
				fs = fmt.Sprintf("%.2f", float64(r.fsyncs)/float64(w.seconds))
			}
			fmt.Fprintf(&out, "| %s | %s | %d | %d | %.2f | %d | %.2f | %s |\n", w.name, mk.name, r.payload, r.proc,
				float64(r.proc)/float64(r.payload), r.dev, float64(r.dev)/float64(r.payload), fs)
			os.RemoveAll(dir)
		}
	}
	t.Log(out.String())
}

// TestMeasureRecovery1GB builds a 1 GiB spool (100-byte payloads) in each
// store and times Open from a cold page cache.
func TestMeasureRecovery1GB(t *testing.T) {
	if os.Getenv("KESTREL_SPOOL_MEASURE") == "" {
		t.Skip("set KESTREL_SPOOL_MEASURE=1")
	}
	mnt, _ := loopfs.Ext4(t, "3G")
	const size = 100
	n := (1 << 30) / size
	payload := bytes.Repeat([]byte{0x33}, size)
	var out strings.Builder
	fmt.Fprintf(&out, "\n| store | records | payload | on disk | build (append+commit) | recovery (cold cache) | recovery (warm) |\n|---|---|---|---|---|---|---|\n")
	for _, mk := range makers {
		dir := filepath.Join(mnt, mk.name)
		s := benchSpool(t, mk, dir)
		t0 := time.Now()
		for i := range n {
			q := s.NextSeq()
			s.Append(Item{Seq: q, Priority: kestrel.Priority(i % 3), Time: int64(i), Data: payload})
			if i%20000 == 19999 {
				s.syncOnce()
			}
		}
		s.Close()
		build := time.Since(t0)
		var cold, warm time.Duration
		var usage int64
		for round := range 2 {
			if round == 0 {
				exec.Command("sync").Run()
				os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
			}
			t0 = time.Now()
			s = benchSpool(t, mk, dir)
			d := time.Since(t0)
			if got := s.Metrics().Records; got != n {
				t.Fatalf("%s: recovered %d of %d", mk.name, got, n)
			}
			usage = s.Metrics().StoreBytes
			s.Close()
			if round == 0 {
				cold = d
			} else {
				warm = d
			}
		}
		fmt.Fprintf(&out, "| %s | %d | %d MiB | %d MiB | %v | %v | %v |\n", mk.name, n, n*size>>20, usage>>20,
			build.Round(time.Millisecond), cold.Round(time.Millisecond), warm.Round(time.Millisecond))
		os.RemoveAll(dir)
	}
	t.Log(out.String())
}

// TestMeasureRealTime checks the simulated seconds of
// TestMeasureWriteAmplification against the real 1 s ticker: 10 records/s
// of 40 bytes, offline, for 30 s.
func TestMeasureRealTime(t *testing.T) {
	if os.Getenv("KESTREL_SPOOL_MEASURE") == "" {
		t.Skip("set KESTREL_SPOOL_MEASURE=1")
	}
	mnt, dev := loopfs.Ext4(t, "512M")
	s, err := Open(filepath.Join(mnt, "rt"), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	exec.Command("sync").Run()
	p0, d0 := procWriteBytes(t), devWriteBytes(dev)
	payload := bytes.Repeat([]byte{0x5a}, 40)
	tick := time.NewTicker(100 * time.Millisecond)
	var n int64
	for range 300 {
		<-tick.C
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: time.Now().UnixMilli(), Data: payload}); err != nil {
			t.Fatal(err)
		}
		n += 40
	}
	tick.Stop()
	time.Sleep(1100 * time.Millisecond)
	exec.Command("sync").Run()
	p, d := procWriteBytes(t)-p0, devWriteBytes(dev)-d0
	m := s.Metrics()
	s.Close()
	t.Logf("real time, 30 s, 10 rec/s x 40 B offline, SyncInterval 1 s: payload %d, write_bytes %d (%.2f per payload byte), device %d (%.2f), %d group commits",
		n, p, float64(p)/float64(n), d, float64(d)/float64(n), m.Syncs)
}
