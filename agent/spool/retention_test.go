package spool

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/loopfs"
)

// Retention on the medium (issue 14, item 6): "no delivered position older
// than spool.max_age is readable on the spool's medium". The test writes
// positions carrying a marker with their seq at 1 Hz of simulated time,
// delivers them (or not: an outage), and scans the medium itself for the
// markers: on ext4 the loop device's backing image, every byte of it
// (journal, free blocks, metadata included), not the files; on tmpfs,
// which has no device, every file in the spool directory (freed tmpfs
// pages cannot be read back from user space).

const retMarker = "KRETMARK"

func retPayload(seq uint64) []byte {
	b := fmt.Appendf(nil, "%s%010d", retMarker, seq)
	return append(b, bytes.Repeat([]byte{'.'}, 40-len(b))...)
}

// scanMarkers returns the seqs whose marker occurs in b.
func scanMarkers(b []byte) map[uint64]int {
	found := map[uint64]int{}
	m := []byte(retMarker)
	for {
		i := bytes.Index(b, m)
		if i < 0 {
			return found
		}
		b = b[i+len(m):]
		if len(b) >= 10 {
			if q, err := strconv.ParseUint(string(b[:10]), 10, 64); err == nil {
				found[q]++
			}
		}
	}
}

// retClock is the simulated time: wall and monotonic advance together.
type retClock struct{ t time.Duration }

var retEpoch = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

func (c *retClock) now() time.Time                       { return retEpoch.Add(c.t) }
func (c *retClock) mono() time.Duration                  { return c.t }
func (c *retClock) advance(d time.Duration)              { c.t += d }
func (c *retClock) since(at time.Duration) time.Duration { return c.t - at }

type retRun struct {
	t        *testing.T
	dir      string
	scan     func() []byte
	clk      *retClock
	s        *Spool
	opts     Options
	appended map[uint64]time.Duration // seq: append time (mono)
	gone     map[uint64]bool          // delivered or evicted
	worst    time.Duration            // the oldest gone record found on the medium
	found    int                      // gone records older than the bound found
	// onlineFound is found after the online hour.
	onlineFound int
}

func (r *retRun) open() {
	s, err := Open(r.dir, r.opts, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.s = s
}

// second is one simulated second: a position appended, the group commit,
// and (online) its delivery.
func (r *retRun) second(online bool) {
	q := r.s.NextSeq()
	if _, err := r.s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: r.clk.now().UnixMilli(), Data: retPayload(q)}); err != nil {
		r.t.Fatal(err)
	}
	r.appended[q] = r.clk.t
	r.s.expire()
	r.s.syncOnce()
	if online {
		var seqs []uint64
		for _, it := range r.s.Take(nil, 1<<20, 0) {
			seqs = append(seqs, it.Seq)
			r.gone[it.Seq] = true
		}
		r.s.Commit(seqs)
	}
	for q, at := range r.appended {
		if !r.gone[q] && r.clk.since(at) > r.opts.MaxAge {
			r.gone[q] = true // evicted by age (normal priority)
		}
	}
	r.clk.advance(time.Second)
}

// check scans the medium: every gone record found must be younger than bound.
func (r *retRun) check(bound time.Duration) {
	unix.Sync()
	for q := range scanMarkers(r.scan()) {
		at, ok := r.appended[q]
		if !ok {
			r.t.Fatalf("marker of seq %d never appended", q)
		}
		if !r.gone[q] {
			continue
		}
		age := r.clk.since(at)
		r.worst = max(r.worst, age)
		if age > bound {
			r.found++
		}
	}
}

// retention runs an hour online, an outage of 40 minutes (longer than
// MaxAge: the backlog ages out), half an hour online, and ten minutes after
// a reboot, checking the medium every two minutes online and offline,
// five minutes after.
func retention(t *testing.T, dir string, scan func() []byte) *retRun {
	clk := &retClock{}
	r := &retRun{t: t, dir: dir, scan: scan, clk: clk,
		opts: Options{MaxAge: 20 * time.Minute, SyncInterval: time.Hour, SegmentBytes: 1 << 20, MaxBytes: 64 << 20,
			Now: clk.now, Mono: clk.mono},
		appended: map[uint64]time.Duration{}, gone: map[uint64]bool{}}
	r.open()
	span := r.opts.span()
	// Delivered within a second: gone from the medium once its segment
	// is sealed (span) and drained.
	online := span + 2*time.Second
	// An outage: a sealed segment holds delivered records until its
	// oldest record reaches MaxAge; then the rest of it is evicted too.
	mixed := r.opts.MaxAge + 2*time.Second
	// 3,670 s: the outage begins inside a segment, which then holds
	// delivered and undelivered records.
	for i := range 3670 {
		r.second(true)
		if i%120 == 119 {
			r.check(online)
		}
	}
	r.onlineFound = r.found
	t.Logf("online hour: oldest delivered record on the medium %v (bound %v)", r.worst, online)
	for i := range 2400 {
		r.second(false)
		if i%120 == 119 {
			r.check(mixed)
		}
	}
	for i := range 1800 {
		r.second(true)
		if i%300 == 299 {
			r.check(mixed)
		}
	}
	if err := r.s.Close(); err != nil {
		t.Fatal(err)
	}
	r.open() // a reboot: recovery retires what drained
	for i := range 600 {
		r.second(true)
		if i%300 == 299 {
			r.check(mixed)
		}
	}
	r.s.Close()
	r.check(mixed)
	t.Logf("whole run: oldest delivered or evicted record on the medium %v (bound %v), %d older than the bound",
		r.worst, mixed, r.found)
	return r
}

func loopBacking(t *testing.T, dev string) string {
	b, err := os.ReadFile("/sys/block/" + dev + "/loop/backing_file")
	if err != nil {
		t.Skip("no loop backing file:", err)
	}
	return strings.TrimSpace(string(b))
}

func readAll(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// filesUnder reads every file under dir, concatenated.
func filesUnder(t *testing.T, dir string) []byte {
	var all []byte
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil {
				all = append(all, b...)
			}
		}
		return nil
	})
	return all
}

func TestRetentionOnMedium(t *testing.T) {
	media := []struct {
		name  string
		mount func(t *testing.T) (dir string, scan func() []byte)
	}{
		{"ext4-raw-image", func(t *testing.T) (string, func() []byte) {
			mnt, dev := loopfs.Ext4(t, "32M")
			img := loopBacking(t, dev)
			return filepath.Join(mnt, "spool"), func() []byte { return readAll(t, img) }
		}},
		{"tmpfs-files", func(t *testing.T) (string, func() []byte) {
			dir := filepath.Join(mountTmpfs(t, "16m"), "spool")
			return dir, func() []byte { return filesUnder(t, dir) }
		}},
	}
	for _, m := range media {
		t.Run(m.name, func(t *testing.T) {
			dir, scan := m.mount(t)
			r := retention(t, dir, scan)
			if r.onlineFound > 0 {
				t.Errorf("online: %d delivered records older than the segment span found on the medium", r.onlineFound)
			}
			if r.found > 0 {
				t.Errorf("%d delivered or evicted records found on the medium past the bound (oldest %v)", r.found, r.worst)
			}
		})
		// The test of the test: without the wipe and the age seal, the
		// same run finds old delivered records on the medium.
		t.Run(m.name+"-without-mechanism", func(t *testing.T) {
			noRetention = true
			defer func() { noRetention = false }()
			dir, scan := m.mount(t)
			r := retention(t, dir, scan)
			if r.onlineFound == 0 || r.found == 0 {
				t.Errorf("without the wipe no old record was found on the medium: the scan sees nothing")
			}
		})
	}
}

// TestMeasureRetentionFlashWrites measures what retention costs in flash
// writes: device bytes per hour (the loop device's own sectors-written
// counter, journal and metadata included) at one 40-byte position a
// second, acknowledged just after its group commit (the agent's everyday
// mode), over simulated hours, with and without the wipe and the age seal,
// and with sealing on. docs/spool.md has the figures.
func TestMeasureRetentionFlashWrites(t *testing.T) {
	if os.Getenv("KESTREL_SPOOL_MEASURE") == "" {
		t.Skip("set KESTREL_SPOOL_MEASURE=1 (slow; root mounts a loop ext4)")
	}
	mnt, dev := loopfs.Ext4(t, "512M")
	rows := []struct {
		name    string
		maxAge  time.Duration
		hours   int
		off     bool
		encrypt bool
		warm    bool
	}{
		{"before: no wipe, no age seal (max_age 168h), fresh spool", 168 * time.Hour, 24, true, false, false},
		{"after: wipe + age seal, max_age 168h (span 21h), fresh spool", 168 * time.Hour, 24, false, false, false},
		{"before: no wipe, no age seal (max_age 168h), in service", 168 * time.Hour, 24, true, false, true},
		{"after: wipe + age seal, max_age 168h (span 21h), in service", 168 * time.Hour, 24, false, false, true},
		{"before: no wipe, no age seal (max_age 1h), in service", time.Hour, 6, true, false, true},
		{"after: wipe + age seal, max_age 1h (span 7.5 min), in service", time.Hour, 6, false, false, true},
		{"after, sealed (spool.encrypt), max_age 1h, in service", time.Hour, 6, false, true, true},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n| 1 Hz x 40 B, acked after each group commit | hours | device bytes | device bytes/hour | write_bytes/hour | wipes | wiped bytes |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		noRetention = r.off
		clk := &retClock{}
		dir := filepath.Join(mnt, fmt.Sprintf("m%d", time.Now().UnixNano()))
		o := Options{MaxAge: r.maxAge, SyncInterval: time.Hour, MaxBytes: 256 << 20, SegmentBytes: 4 << 20,
			Now: clk.now, Mono: clk.mono}
		if r.encrypt {
			o.Key, o.Encrypt = testKey, true
		}
		s, err := Open(dir, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Warm: a device in service writes over recycled files. An
		// 8 MiB backlog is built and drained twice first, so that both
		// variants measure recycled files, not a fresh file's extent
		// conversions.
		if r.warm {
			big := bytes.Repeat([]byte{0x77}, 4000)
			for range 2 {
				for range (8 << 20) / len(big) {
					q := s.NextSeq()
					if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: clk.now().UnixMilli(), Data: big}); err != nil {
						t.Fatal(err)
					}
				}
				s.syncOnce()
				var seqs []uint64
				for _, it := range s.Take(nil, 1<<30, 0) {
					seqs = append(seqs, it.Seq)
				}
				s.Commit(seqs)
				s.syncOnce()
				clk.advance(time.Second)
			}
		}
		payload := bytes.Repeat([]byte{0x5a}, 40)
		unix.Sync()
		p0, d0 := procWriteBytes(t), devWriteBytes(dev)
		w0 := baseStore(s.store).(*LogStore).Stats()
		for range r.hours * 3600 {
			q := s.NextSeq()
			copy(payload, strconv.AppendUint(nil, q, 10))
			if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: clk.now().UnixMilli(), Data: payload}); err != nil {
				t.Fatal(err)
			}
			items := s.Take(nil, 1<<20, 0)
			s.expire()
			s.syncOnce()
			seqs := make([]uint64, len(items))
			for i, it := range items {
				seqs[i] = it.Seq
			}
			s.Commit(seqs)
			clk.advance(time.Second)
		}
		s.syncOnce()
		unix.Sync()
		dv, pv := devWriteBytes(dev)-d0, procWriteBytes(t)-p0
		st := baseStore(s.store).(*LogStore).Stats()
		st.Wiped -= w0.Wiped
		st.WipedBytes -= w0.WipedBytes
		s.Close()
		noRetention = false
		fmt.Fprintf(&out, "| %s | %d | %d | %d | %d | %d | %d |\n", r.name, r.hours, dv, dv/int64(r.hours),
			pv/int64(r.hours), st.Wiped, st.WipedBytes)
		os.RemoveAll(dir)
	}
	t.Log(out.String())
}
