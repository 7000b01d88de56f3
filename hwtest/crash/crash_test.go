package crash

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
)

const childEnv = "KESTREL_CRASH_CHILD_DIR"

// Small segments and a short sync interval put many segment switches,
// deletions and group commits inside each short life of the child.
var childOpts = spool.Options{
	SyncInterval: 2 * time.Millisecond,
	SegmentBytes: 32 << 10,
	SeqBlock:     64,
	MaxBytes:     64 << 20,
}

func payload(seq uint64) []byte {
	n := 20 + int(seq%61)
	b := make([]byte, 0, n+12)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ':')
	for len(b) < n {
		b = append(b, byte('a'+seq%26))
	}
	return b
}

// TestCrashChild is the process that gets killed. It reports on stdout,
// one write(2) per line, before acting ("s" a seq handed out, "c" seqs about
// to be committed) or after ("d" seqs whose Ticket closed without error).
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("child of TestCrashSIGKILL only")
	}
	out := os.Stdout
	s, err := spool.Open(dir, childOpts, nil)
	if err != nil {
		fmt.Fprintf(out, "error %v\n", err)
		os.Exit(3)
	}
	fmt.Fprintf(out, "boot %d\n", s.Boot())
	type pending struct {
		tk   spool.Ticket
		seqs []uint64
	}
	var (
		queue []pending
		items []spool.Item
		line  []byte
	)
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	offline := r.IntN(10) == 0
	for {
		var p pending
		for range 16 {
			q := s.NextSeq()
			line = strconv.AppendUint(append(line[:0], "s "...), q, 10)
			out.Write(append(line, '\n'))
			prio := kestrel.Priority(r.IntN(3))
			if r.IntN(50) == 0 {
				prio = kestrel.PriorityEmergency
			}
			tk, err := s.Append(spool.Item{Seq: q, Priority: prio, Time: time.Now().UnixMilli(), Data: payload(q)})
			if err != nil {
				fmt.Fprintf(out, "error %v\n", err)
				os.Exit(3)
			}
			if p.tk != tk {
				if p.seqs != nil {
					queue = append(queue, p)
				}
				p = pending{tk: tk}
			}
			p.seqs = append(p.seqs, q)
		}
		queue = append(queue, p)
		for len(queue) > 0 {
			select {
			case <-queue[0].tk.Durable():
			default:
			}
			if queue[0].tk.Err() != nil || !closed(queue[0].tk) {
				break
			}
			line = append(line[:0], 'd')
			for _, q := range queue[0].seqs {
				line = strconv.AppendUint(append(line, ' '), q, 10)
			}
			out.Write(append(line, '\n'))
			queue = queue[1:]
		}
		// One life in ten is out of coverage: nothing is sent and a
		// backlog builds up. Otherwise send and acknowledge faster than
		// records come in (31.5 taken per 16 appended, one batch in
		// eight released), so the backlog drains again and the spool
		// stays bounded over thousands of lives.
		if offline {
			continue
		}
		items = s.Take(items, r.IntN(64), 0)
		if len(items) > 0 {
			line = append(line[:0], 'c')
			seqs := make([]uint64, len(items))
			for i, it := range items {
				seqs[i] = it.Seq
				line = strconv.AppendUint(append(line, ' '), it.Seq, 10)
			}
			out.Write(append(line, '\n'))
			if r.IntN(8) == 0 {
				s.Release(seqs) // connection lost: back in the queue, never acknowledged
				out.Write([]byte("r\n"))
			} else {
				s.Commit(seqs)
			}
		}
	}
}

func closed(tk spool.Ticket) bool {
	select {
	case <-tk.Durable():
		return true
	default:
		return false
	}
}

// childLog is what the parent learned from one child's stdout.
type childLog struct {
	boot     uint32
	seqs     []uint64
	durable  []uint64
	commitIn map[uint64]bool // commit intended (maybe done)
	errs     []string
}

func parse(r io.Reader, booted chan<- struct{}) childLog {
	cl := childLog{commitIn: map[uint64]bool{}}
	br := bufio.NewReader(r)
	var lastC []uint64
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break // a partial last line is the kill cutting a write
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		nums := make([]uint64, 0, len(f)-1)
		for _, x := range f[1:] {
			if n, err := strconv.ParseUint(x, 10, 64); err == nil {
				nums = append(nums, n)
			}
		}
		switch f[0] {
		case "boot":
			cl.boot = uint32(nums[0])
			close(booted)
		case "s":
			cl.seqs = append(cl.seqs, nums...)
		case "d":
			cl.durable = append(cl.durable, nums...)
		case "c":
			lastC = nums
			for _, q := range nums {
				cl.commitIn[q] = true
			}
		case "r":
			for _, q := range lastC {
				delete(cl.commitIn, q)
			}
		case "error":
			cl.errs = append(cl.errs, line)
		}
	}
	return cl
}

func TestCrashSIGKILL(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child")
	}
	cycles := 200
	if v := os.Getenv("KESTREL_CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("KESTREL_CRASH_CYCLES=%q", v)
		}
		cycles = n
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d cycles, spool in %s", seed, cycles, dir)
	r := rand.New(rand.NewPCG(seed, 1))

	var (
		maxSeq    uint64 // highest seq any child handed out
		lastBoot  uint32
		committed = map[uint64]bool{} // commit intended at some point: may be gone
		durable   = map[uint64]bool{} // reported durable and never commit-intended
		stats     struct {
			durable, recovered, torn, tornBytes, maxRecords int
			killedEarly, pooled                             int
		}
	)
	start := time.Now()
	for cycle := range cycles {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan childLog, 1)
		booted := make(chan struct{})
		go func() { done <- parse(stdout, booted) }()
		// One kill in five lands anywhere from process start-up through
		// Open (recovery, the boot and sequence reservation); the rest
		// come after Open, within a few tens of ms of full-speed work.
		if r.IntN(5) == 0 {
			time.Sleep(time.Duration(r.IntN(30_000)) * time.Microsecond)
		} else {
			select {
			case <-booted:
			case <-time.After(10 * time.Second):
			}
			time.Sleep(time.Duration(r.IntN(25_000)) * time.Microsecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cl := <-done
		werr := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("cycle %d: child ended on its own (%v): %s %s", cycle, werr, cl.errs, stderr.String())
		}
		if len(cl.errs) > 0 {
			t.Fatalf("cycle %d: child failed: %v", cycle, cl.errs)
		}
		if cl.boot == 0 {
			stats.killedEarly++
		} else {
			if cl.boot <= lastBoot {
				t.Fatalf("cycle %d: boot %d after %d", cycle, cl.boot, lastBoot)
			}
			lastBoot = cl.boot
		}
		for i, q := range cl.seqs {
			if q <= maxSeq {
				t.Fatalf("cycle %d: seq %d handed out again (had reached %d; %d-th of this run)", cycle, q, maxSeq, i)
			}
			maxSeq = q
		}
		for q := range cl.commitIn {
			committed[q] = true
			delete(durable, q)
		}
		for _, q := range cl.durable {
			if !committed[q] {
				durable[q] = true
			}
		}
		stats.durable += len(cl.durable)

		// Reopen as the next boot would, and check.
		s, err := spool.Open(dir, childOpts, nil)
		if err != nil {
			t.Fatalf("cycle %d: reopen: %v", cycle, err)
		}
		if h := s.Health(); h.State != spool.HealthOK {
			t.Fatalf("cycle %d: health %v: %v", cycle, h.State, h.Err)
		}
		m := s.Metrics()
		if m.RecoveryDuplicates != 0 {
			t.Fatalf("cycle %d: %d duplicate records in the store", cycle, m.RecoveryDuplicates)
		}
		stats.torn += m.RecoveryDropped
		stats.tornBytes += int(m.RecoveryDroppedBytes)
		stats.recovered += m.Recovered
		stats.maxRecords = max(stats.maxRecords, m.Recovered)
		if b := s.Boot(); b <= lastBoot {
			t.Fatalf("cycle %d: reopen boot %d, child had %d", cycle, b, lastBoot)
		} else {
			lastBoot = b
		}
		items := s.Take(nil, 1<<30, 0)
		present := make(map[uint64]bool, len(items))
		for _, it := range items {
			if present[it.Seq] {
				t.Fatalf("cycle %d: seq %d present twice", cycle, it.Seq)
			}
			present[it.Seq] = true
			if !bytes.Equal(it.Data, payload(it.Seq)) {
				t.Fatalf("cycle %d: seq %d payload %q", cycle, it.Seq, it.Data)
			}
			if it.Seq > maxSeq {
				t.Fatalf("cycle %d: seq %d present but never handed out (max %d)", cycle, it.Seq, maxSeq)
			}
		}
		for q := range durable {
			if !present[q] {
				t.Fatalf("cycle %d: seq %d was reported durable and never acknowledged, but is gone", cycle, q)
			}
		}
		if q := s.NextSeq(); q <= maxSeq {
			t.Fatalf("cycle %d: reopened spool hands out seq %d, already used (max %d)", cycle, q, maxSeq)
		} else {
			maxSeq = q
		}
		s.Release(nil)
		if err := s.Close(); err != nil {
			t.Fatalf("cycle %d: close: %v", cycle, err)
		}
		// Drained segment files are kept and written over by later
		// segments: count the lives that saw one, so that the run
		// shows recycled files were crashed in too.
		if free, _ := filepath.Glob(filepath.Join(dir, "free-*.log")); len(free) > 0 {
			stats.pooled++
		}
	}
	t.Logf("%d cycles in %v: %d killed before Open returned; %d durable reports checked; "+
		"%d records recovered in all (max %d at once); %d torn tails cut (%d bytes); "+
		"%d lives with recycled segment files; nothing lost, nothing duplicated",
		cycles, time.Since(start).Round(time.Millisecond), stats.killedEarly, stats.durable,
		stats.recovered, stats.maxRecords, stats.torn, stats.tornBytes, stats.pooled)
	if stats.pooled == 0 {
		t.Errorf("no drained segment file was ever kept for reuse: the recycling path was not exercised")
	}
}
