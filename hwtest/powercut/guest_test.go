package powercut

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/hwtest/kernelrig"
)

// Guest disks, in the order the host attaches them.
const (
	dataDisk   = "/dev/vda" // ext4, made on the host, with the ballast file
	logDisk    = "/dev/vdb" // dm-log-writes' log
	eventsDisk = "/dev/vdc" // the workload's history (see events)
)

// events is the workload's history, one line per event:
//
//	b BOOT          the spool opened with this boot id
//	s SEQ PRIO      a seq handed out and appended (payload(SEQ, PRIO))
//	d SEQ...        Ticket.Durable closed with no error for these
//	c SEQ...        about to Commit these (acknowledged from here on)
//	v SEQ...        at the end: appended, never committed, no longer in
//	                the spool: evicted by policy at some time
//
// After events the workload puts a mark "eN" in the write log, N being the
// number of events so far; marks order the history against the block
// writes. The history itself goes to its own disk, written once at the end:
// the guest does not lose power, the replayed copies do.
type events struct {
	buf   bytes.Buffer
	n     int
	dm    *dmDevice
	marks int
}

func (e *events) line(kind byte, nums ...uint64) {
	b := e.buf.AvailableBuffer()
	b = append(b, kind)
	for _, n := range nums {
		b = strconv.AppendUint(append(b, ' '), n, 10)
	}
	e.buf.Write(append(b, '\n'))
	e.n++
}

func (e *events) mark() error {
	e.marks++
	return e.dm.Message("mark e" + strconv.Itoa(e.n))
}

func TestPowerCutGuest(t *testing.T) {
	kernelrig.SkipOnHost(t)
	secs, err := strconv.Atoi(os.Getenv("KESTREL_POWERCUT_SECONDS"))
	if err != nil || secs <= 0 {
		t.Fatalf("KESTREL_POWERCUT_SECONDS=%q", os.Getenv("KESTREL_POWERCUT_SECONDS"))
	}
	seed, _ := strconv.ParseUint(os.Getenv("KESTREL_POWERCUT_SEED"), 10, 64)
	sealed = os.Getenv("KESTREL_POWERCUT_SEALED") == "1"
	f, err := os.Open(dataDisk)
	if err != nil {
		t.Fatal(err)
	}
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	dm, err := dmCreate("powercut", "log-writes", size/512, dataDisk+" "+logDisk)
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{dm: dm}
	if err := ev.mark(); err != nil {
		t.Fatal(err)
	}
	mnt := "/mnt"
	if err := unix.Mount(dm.Path, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount ext4 on %s: %v", dm.Path, err)
	}
	st := runWorkload(t, ev, filepath.Join(mnt, spoolDir), filepath.Join(mnt, "ballast"),
		time.Duration(secs)*time.Second, seed)
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := dm.Remove(); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(eventsDisk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(ev.buf.Bytes()); err != nil {
		t.Fatalf("history of %d bytes: %v", ev.buf.Len(), err)
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	t.Logf("workload: %s; %d events, %d marks, %d bytes of history", st, ev.n, ev.marks, ev.buf.Len())
}

type workloadStats struct {
	appended, durable, committed, released, evicted, rejected int
	full, syncErrors                                          int
	lanes                                                     [kestrel.NumPriorities]int
}

func (s workloadStats) String() string {
	return fmt.Sprintf("%d appended (bulk %d, normal %d, high %d, emergency %d), %d reported durable, "+
		"%d committed, %d released, %d evicted, %d refused as full, %d polls saw the disk full, %d sync errors",
		s.appended, s.lanes[0], s.lanes[1], s.lanes[2], s.lanes[3], s.durable, s.committed, s.released,
		s.evicted, s.rejected, s.full, s.syncErrors)
}

// runWorkload drives the spool through cycles of 6 s: online (sending and
// acknowledging faster than appending), an outage (nothing sent; bulk
// records fill the disk), and online again (the backlog drains, segments
// empty and their files are recycled). After the first outage the ballast
// is deleted and the spool restarted with a small byte bound, so later
// outages evict by policy instead.
func runWorkload(t *testing.T, ev *events, dir, ballast string, d time.Duration, seed uint64) workloadStats {
	r := rand.New(rand.NewPCG(seed, 2))
	opts := options()
	s, err := spool.Open(dir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev.line('b', uint64(s.Boot()))
	type pending struct {
		tk   spool.Ticket
		seqs []uint64
	}
	var (
		st        workloadStats
		queue     []pending
		items     []spool.Item
		appended  = map[uint64]bool{}
		committed = map[uint64]bool{}
		seqs      []uint64
		evicted   uint64 // by earlier spools of this run
	)
	reportDurable := func() {
		reported := false
		for len(queue) > 0 {
			select {
			case <-queue[0].tk.Durable():
			default:
			}
			if !closed(queue[0].tk) {
				break
			}
			if queue[0].tk.Err() == nil {
				ev.line('d', queue[0].seqs...)
				st.durable += len(queue[0].seqs)
				reported = true
			} else {
				st.syncErrors++
			}
			queue = queue[1:]
		}
		if reported {
			if err := ev.mark(); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	for time.Since(start) < d {
		phase := time.Since(start) % (6 * time.Second)
		offline := phase >= 2*time.Second && phase < 4500*time.Millisecond
		if !offline && ballast != "" && time.Since(start) > 6*time.Second {
			// The first outage filled the disk. Free it, and restart
			// (a clean Close, then Open as the next boot) with a byte
			// bound that later outages run into.
			os.Remove(ballast)
			ballast = ""
			evicted += s.Metrics().Evicted
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			reportDurable()
			queue = nil // tickets still open never reported durable
			opts.MaxBytes = laterMaxBytes
			if s, err = spool.Open(dir, opts, nil); err != nil {
				t.Fatal(err)
			}
			ev.line('b', uint64(s.Boot()))
			if err := ev.mark(); err != nil {
				t.Fatal(err)
			}
		}
		var p pending
		for range 8 {
			prio := kestrel.PriorityNormal
			switch x := r.IntN(100); {
			case x < 3:
				prio = kestrel.PriorityEmergency
			case x < 18:
				prio = kestrel.PriorityHigh
			case x < 50 || offline && x < 80:
				prio = kestrel.PriorityBulk
			}
			q := s.NextSeq()
			tk, err := s.Append(spool.Item{Seq: q, Priority: prio, Time: time.Now().UnixMilli(), Data: payload(q, prio)})
			if err == spool.ErrFull {
				st.rejected++
				continue
			}
			if err != nil {
				t.Fatalf("append %d: %v", q, err)
			}
			ev.line('s', q, uint64(prio))
			appended[q] = true
			st.appended++
			st.lanes[prio]++
			if p.tk != tk {
				if p.seqs != nil {
					queue = append(queue, p)
				}
				p = pending{tk: tk}
			}
			p.seqs = append(p.seqs, q)
		}
		if p.seqs != nil {
			queue = append(queue, p)
		}
		reportDurable()
		if s.Health().State == spool.HealthFull {
			st.full++
		}
		if !offline {
			items = s.Take(items, 12+r.IntN(40), 0)
			if len(items) > 0 {
				seqs = seqs[:0]
				for _, it := range items {
					seqs = append(seqs, it.Seq)
				}
				if r.IntN(8) == 0 {
					s.Release(seqs) // connection lost before the PUBACK
					st.released += len(seqs)
				} else {
					ev.line('c', seqs...)
					for _, q := range seqs {
						committed[q] = true
					}
					if err := s.Commit(seqs); err != nil {
						t.Fatalf("commit: %v", err)
					}
					st.committed += len(seqs)
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	// Whatever was appended, never committed and is no longer held was
	// evicted: the metrics must say so too, or records went missing.
	left := s.Take(nil, 1<<30, 0)
	held := map[uint64]bool{}
	for _, it := range left {
		held[it.Seq] = true
	}
	var gone []uint64
	for q := range appended {
		if !committed[q] && !held[q] {
			gone = append(gone, q)
		}
	}
	// Every record gone must be counted as evicted. The count may be
	// higher: a drop is persisted lazily, and one the full disk refused
	// at the restart comes back after it (a duplicate, never a loss).
	if m := s.Metrics(); uint64(len(gone)) > evicted+m.Evicted {
		// The spool also drops records it cannot read back or store
		// (RecoveryUnreadable, logged): a loss on a live disk, so a failure.
		t.Errorf("%d records appended, never committed and no longer held, but the spool counts %d evicted "+
			"(%d unreadable since this Open, health %v)", len(gone), evicted+m.Evicted, m.RecoveryUnreadable, m.Health.State)
	}
	st.evicted = len(gone)
	for len(gone) > 0 {
		n := min(len(gone), 64)
		ev.line('v', gone[:n]...)
		gone = gone[n:]
	}
	seqs = seqs[:0]
	for _, it := range left {
		seqs = append(seqs, it.Seq)
	}
	s.Release(seqs)
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := ev.mark(); err != nil {
		t.Fatal(err)
	}
	return st
}

func closed(tk spool.Ticket) bool {
	select {
	case <-tk.Durable():
		return true
	default:
		return false
	}
}
