package powercut

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/hwtest/kernelrig"
)

func TestMain(m *testing.M) { kernelrig.Main(m) }

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q", name, v)
	}
	return n
}

// TestPowerCut: see the package documentation and docs/spool.md.
// KESTREL_POWERCUT_STATES (default 520) bounds the crash states checked,
// KESTREL_POWERCUT_SECONDS (default 16) is the guest's workload time;
// KESTREL_POWERCUT_SEALED=1 runs it with spool encryption on.
func TestPowerCut(t *testing.T) {
	powerCut(t, os.Getenv("KESTREL_POWERCUT_SEALED") == "1", 520)
}

// TestPowerCutSealed is the same with every payload sealed (spool.encrypt):
// the recovery rules hold with authenticated encryption, and no nonce is
// used twice (NextSeq is never handed out again, which every state checks).
func TestPowerCutSealed(t *testing.T) {
	if os.Getenv("KESTREL_POWERCUT_STATES") != "" {
		t.Skip("the long runs set KESTREL_POWERCUT_SEALED on TestPowerCut instead")
	}
	powerCut(t, true, 520)
}

func powerCut(t *testing.T, withSealing bool, defaultStates int) {
	sealed = withSealing
	defer func() { sealed = false }()
	if kernelrig.InGuest() {
		t.Skip("host half")
	}
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "replaying crash states mounts them on loop devices: needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		skipUnlessRequired(t, "mkfs.ext4 not found (Debian package e2fsprogs)")
	}
	budget := envInt(t, "KESTREL_POWERCUT_STATES", defaultStates)
	secs := envInt(t, "KESTREL_POWERCUT_SECONDS", 16)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KESTREL_POWERCUT_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (KESTREL_POWERCUT_SEED), %d crash states, %d s workload, nosync build: %v, sealed: %v",
		seed, budget, secs, spool.NoSync, sealed)

	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := makeImage(mkfs, dir, base); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data.img")
	logImg := filepath.Join(dir, "log.img")
	evImg := filepath.Join(dir, "events.img")
	if err := copyFile(data, base); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		size int64
	}{{logImg, 4 << 30}, {evImg, 256 << 20}} {
		if err := os.WriteFile(f.path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path, f.size); err != nil {
			t.Fatal(err)
		}
	}
	tags := ""
	if spool.NoSync {
		tags = "kestrel_nosync"
	}
	res := kernelrig.Run(t, kernelrig.Guest{
		Test:    "TestPowerCutGuest",
		Modules: kernelrig.DiskModules,
		Disks:   []string{data, logImg, evImg},
		Env: map[string]string{"KESTREL_POWERCUT_SECONDS": strconv.Itoa(secs),
			"KESTREL_POWERCUT_SEED": strconv.FormatUint(seed, 10), "KESTREL_POWERCUT_SEALED": map[bool]string{true: "1", false: "0"}[sealed]},
		Tags:    tags,
		Timeout: time.Duration(secs)*time.Second + 4*time.Minute,
	})
	for _, l := range strings.Split(res.Console, "\n") {
		if strings.Contains(l, "workload:") {
			t.Log("guest", strings.TrimSpace(l))
		}
	}

	evb, err := os.ReadFile(evImg)
	if err != nil {
		t.Fatal(err)
	}
	evb, _, _ = bytes.Cut(evb, []byte{0})
	h, err := parseHistory(evb)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := os.Open(logImg)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	fi, _ := lf.Stat()
	wl, err := ParseLog(lf, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	c, err := newChecker(t, wl, h, base, dir)
	if err != nil {
		t.Fatal(err)
	}
	states := planStates(wl, budget, newRand(seed))
	t.Logf("write log: %d entries (%d flushes, %d FUA, %d marks); %d crash states planned",
		len(wl.Entries), c.flushes, c.fuas, len(c.marks), len(states))
	start := time.Now()
	for i := range states {
		if err := c.check(&states[i]); err != nil {
			t.Fatalf("crash state %d (entry %d): %v", i, states[i].p, err)
		}
	}
	c.report(t, len(states), time.Since(start))
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 3)) }

// skipUnlessRequired skips, or fails under KESTREL_RIG_REQUIRED=1 (CI).
func skipUnlessRequired(t *testing.T, why string) {
	if os.Getenv("KESTREL_RIG_REQUIRED") == "1" {
		t.Fatalf("%s (KESTREL_RIG_REQUIRED=1)", why)
	}
	t.Skip(why)
}

// makeImage makes the ext4 data disk with a ballast file that leaves a few
// MiB free (mkfs.ext4 -d copies it in).
func makeImage(mkfs, dir, img string) error {
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "ballast"), bytes.Repeat([]byte{0xba}, ballastBytes), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, imageBytes); err != nil {
		return err
	}
	// Inode tables and the journal zeroed by mkfs, not by the kernel in
	// the background (their writes would be noise in the log).
	out, err := exec.Command(mkfs, "-F", "-q", "-b", "4096", "-J", "size=4", "-m", "0", "-N", "256",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", root, img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	return nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// crashState is the medium after a power cut at entry p: every write
// before the last flush before p, every FUA write before p, and of the
// other writes since that flush those in keep (log order). keep == nil
// means all of them (a prefix of the log).
type crashState struct {
	p     int
	flush int // index of the last flush before p, or 0
	keep  []int
	kind  string
}

// planStates picks up to budget crash states: the points right after
// flushes and FUA writes (all of them if they fit in half the budget,
// else evenly spaced), and for the rest points between flushes with
// subsets of the writes since the last flush: all but one, a random
// half, or a plain prefix.
func planStates(wl *WriteLog, budget int, r *rand.Rand) []crashState {
	ents := wl.Entries
	lastFlush := make([]int, len(ents)+1) // lastFlush[p]: last flush index < p
	var points []int
	for i := range ents {
		lastFlush[i+1] = lastFlush[i]
		if ents[i].Flags&FlagFlush != 0 {
			lastFlush[i+1] = i
		}
		if ents[i].Flags&(FlagFlush|FlagFUA) != 0 {
			points = append(points, i+1)
		}
	}
	var out []crashState
	half := budget / 2
	if len(points) > half {
		picked := make([]int, 0, half)
		for k := range half {
			picked = append(picked, points[k*len(points)/half])
		}
		points = picked
	}
	for _, p := range points {
		out = append(out, crashState{p: p, flush: lastFlush[p], kind: "flush"})
	}
	// Between flushes: windows with at least one write that no flush or
	// FUA covers.
	var volatile []int // entry indexes of such writes
	for i := range ents {
		if ents[i].Writes() && ents[i].Flags&FlagFUA == 0 {
			volatile = append(volatile, i)
		}
	}
	for tries := 0; len(out) < budget && len(volatile) > 0 && tries < budget*20; tries++ {
		w := volatile[r.IntN(len(volatile))]
		// Cut somewhere after w, before the next flush.
		end := w + 1
		for end < len(ents) && ents[end].Flags&FlagFlush == 0 && r.IntN(4) != 0 {
			end++
		}
		p := end
		f := lastFlush[p]
		var window []int
		for i := f; i < p; i++ {
			if ents[i].Writes() && ents[i].Flags&FlagFUA == 0 {
				window = append(window, i)
			}
		}
		if len(window) == 0 {
			continue
		}
		st := crashState{p: p, flush: f}
		switch r.IntN(3) {
		case 0:
			drop := r.IntN(len(window))
			st.keep = append(slices.Clone(window[:drop]), window[drop+1:]...)
			st.kind = "all but one"
		case 1:
			for _, i := range window {
				if r.IntN(2) == 0 {
					st.keep = append(st.keep, i)
				}
			}
			if st.keep == nil {
				st.keep = []int{}
			}
			st.kind = "random subset"
		default:
			st.kind = "prefix"
		}
		out = append(out, st)
	}
	slices.SortStableFunc(out, func(a, b crashState) int { return a.flush - b.flush })
	return out
}

// memImage is a disk image in memory.
type memImage []byte

func (m memImage) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d beyond the %d-byte image", len(b), off, len(m))
	}
	return copy(m[off:], b), nil
}

// checker replays states in order of their last flush: the image up to
// that flush is kept and advanced; each state is a copy with its own tail.
type checker struct {
	t        *testing.T
	wl       *WriteLog
	h        *history
	work     memImage // entries [0, applied) replayed
	applied  int
	img, mnt string
	buf      []byte

	marks          []int // entry index of each "eN" mark
	labels         []int // its N
	flushes, fuas  int
	lostStates     int
	findings       []string
	states         map[string]int
	kinds          map[string]int
	durableChecks  [kestrel.NumPriorities]int
	statesWithDur  int
	intactChecked  int
	sealedFrames   int // whole sealed frames opened and checked for nonce reuse
	droppedRegions int
	lostCounted    int // records recovery counted as lost
	droppedWhole   int // records whole on the medium that recovery did not keep
	maxRecords     int
	recovered      int
	took           [4]time.Duration // replay, mount and ext4 recovery, spool checks, unmount
}

func newChecker(t *testing.T, wl *WriteLog, h *history, base, dir string) (*checker, error) {
	scratch := dir
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() && unix.Access("/dev/shm", unix.W_OK) == nil {
		if d, err := os.MkdirTemp("/dev/shm", "kestrel-powercut-"); err == nil {
			scratch = d
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	c := &checker{t: t, wl: wl, h: h, img: filepath.Join(scratch, "state.img"),
		mnt: filepath.Join(dir, "mnt"), states: map[string]int{}, kinds: map[string]int{}}
	if err := os.MkdirAll(c.mnt, 0o755); err != nil {
		return nil, err
	}
	work, err := os.ReadFile(base)
	if err != nil {
		return nil, err
	}
	c.work = work
	for i, e := range wl.Entries {
		switch {
		case e.Flags&FlagMark != 0:
			if n, err := strconv.Atoi(strings.TrimPrefix(e.Mark, "e")); err == nil && strings.HasPrefix(e.Mark, "e") {
				c.marks = append(c.marks, i)
				c.labels = append(c.labels, n)
			}
		case e.Flags&FlagFlush != 0:
			c.flushes++
		case e.Flags&FlagFUA != 0:
			c.fuas++
		}
	}
	if len(c.marks) == 0 || c.labels[len(c.labels)-1] != h.n {
		return nil, fmt.Errorf("the write log's marks do not cover the %d events of the history", h.n)
	}
	return c, nil
}

// bounds returns how many events surely happened before entry p (the last
// mark before it) and how many may have (the first mark at or after it).
func (c *checker) bounds(p int) (lo, hi int) {
	k, _ := slices.BinarySearch(c.marks, p) // first mark index >= p
	if k > 0 {
		lo = c.labels[k-1]
	}
	hi = c.h.n
	if k < len(c.marks) {
		hi = c.labels[k]
	}
	return lo, hi
}

// finding records a failed check; the report shows the first few of each
// kind and how many states had it.
func (c *checker) finding(st *crashState, kind, format string, args ...any) {
	c.kinds[kind]++
	if c.kinds[kind] <= 3 {
		c.findings = append(c.findings, fmt.Sprintf("  [%s] entry %d (%s, flush at %d): ", kind, st.p, st.kind, st.flush)+
			fmt.Sprintf(format, args...))
	}
}

func (c *checker) check(st *crashState) error {
	var err error
	t0 := time.Now()
	for ; c.applied < st.flush; c.applied++ {
		if c.buf, err = c.wl.Apply(&c.wl.Entries[c.applied], c.work, c.buf); err != nil {
			return err
		}
	}
	// Written over in place (no truncation): the file keeps its pages.
	img, err := os.OpenFile(c.img, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if _, err := img.WriteAt(c.work, 0); err != nil {
		img.Close()
		return err
	}
	keep := st.keep
	for i := st.flush; i < st.p; i++ {
		e := &c.wl.Entries[i]
		if !e.Writes() {
			continue
		}
		if keep != nil && e.Flags&FlagFUA == 0 {
			if len(keep) == 0 || keep[0] != i {
				continue
			}
			keep = keep[1:]
		}
		if c.buf, err = c.wl.Apply(e, img, c.buf); err != nil {
			img.Close()
			return err
		}
	}
	if err := img.Close(); err != nil {
		return err
	}
	c.states[st.kind]++
	t1 := time.Now()
	c.took[0] += t1.Sub(t0)

	loop, err := attachLoop(c.img)
	if err != nil {
		return err
	}
	defer loop.Close()
	if err := unix.Mount(loop.Path, c.mnt, "ext4", 0, ""); err != nil {
		c.lostStates++
		c.finding(st, "mount", "ext4 does not mount: %v", err)
		return nil
	}
	t2 := time.Now()
	c.took[1] += t2.Sub(t1)
	if !c.checkSpool(st, filepath.Join(c.mnt, spoolDir)) {
		c.lostStates++
	}
	t3 := time.Now()
	c.took[2] += t3.Sub(t2)
	err = unix.Unmount(c.mnt, 0)
	c.took[3] += time.Since(t3)
	return err
}

// checkSpool opens the spool in a crash state and checks it; false if it
// found a loss.
func (c *checker) checkSpool(st *crashState, dir string) bool {
	lo, hi := c.bounds(st.p)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if lo > 0 {
			c.finding(st, "dir gone", "the spool directory is gone after %d events", lo)
			return false
		}
		return true
	}
	intact, err := intactFrames(dir)
	if err != nil {
		c.finding(st, "scan", "reading segments: %v", err)
		return false
	}
	s, err := spool.Open(dir, options(), nil)
	if err != nil {
		c.finding(st, "open", "spool.Open: %v", err)
		return false
	}
	defer s.Close()
	ok := true
	m := s.Metrics()
	c.recovered += m.Recovered
	c.maxRecords = max(c.maxRecords, m.Recovered)
	c.droppedRegions += m.RecoveryDropped
	if b := c.h.bootBefore(lo); s.Boot() <= b {
		c.finding(st, "boot", "boot %d after the workload's boot %d", s.Boot(), b)
		ok = false
	}
	items := s.Take(nil, 1<<30, 0)
	present := make(map[uint64]bool, len(items))
	for _, it := range items {
		r := c.h.recs[it.Seq]
		switch {
		case present[it.Seq]:
			c.finding(st, "duplicate", "seq %d present twice", it.Seq)
			ok = false
		case r == nil || r.appended >= hi:
			c.finding(st, "invented", "seq %d present but never appended before this point", it.Seq)
			ok = false
		case r.prio != min(it.Priority, kestrel.PriorityEmergency) || !bytes.Equal(it.Data, payload(it.Seq, r.prio)):
			c.finding(st, "payload", "seq %d: priority %v, payload %.40q", it.Seq, it.Priority, it.Data)
			ok = false
		}
		present[it.Seq] = true
	}
	acked := func(r *recHist) bool { return r.commitAt >= 0 && r.commitAt < hi }
	lost, checked, example := 0, 0, ""
	for _, q := range c.h.durable {
		r := c.h.recs[q]
		if r.durableAt >= lo || acked(r) || r.evicted {
			continue
		}
		checked++
		c.durableChecks[r.prio]++
		if !present[q] {
			if lost == 0 {
				example = fmt.Sprintf("seq %d (%v, reported durable at event %d < %d)", q, r.prio, r.durableAt, lo)
			}
			lost++
		}
	}
	if checked > 0 {
		c.statesWithDur++
	}
	if lost > 0 {
		c.finding(st, "durable lost", "%d of %d records reported durable and never acknowledged are gone, e.g. %s",
			lost, checked, example)
		ok = false
	}
	// Every record whole on the medium that recovery did not keep (and
	// that was not acknowledged or evicted) must be in its count.
	var dropped []uint64
	droppedBytes := 0
	for _, f := range intact {
		r := c.h.recs[f.seq]
		if r == nil || present[f.seq] || acked(r) || r.evicted {
			continue
		}
		dropped = append(dropped, f.seq)
		droppedBytes += f.size
	}
	c.intactChecked += len(intact)
	// Sealed: no nonce on the medium serves two records (GCM's one rule).
	nonces := make(map[[12]byte]uint64)
	for _, f := range intact {
		if !f.sealed {
			continue
		}
		c.sealedFrames++
		if q, seen := nonces[f.nonce]; seen && q != f.seq {
			c.finding(st, "nonce reused", "nonce %x seals both seq %d and seq %d", f.nonce, q, f.seq)
			ok = false
		}
		nonces[f.nonce] = f.seq
	}
	if len(dropped) > 0 && (m.RecoveryDropped == 0 || m.RecoveryDroppedBytes < int64(droppedBytes) ||
		m.RecoveryLostRecords < len(dropped)) {
		c.finding(st, "uncounted drop", "%d records whole on the medium were dropped by recovery (%d bytes, e.g. seq %d), "+
			"but it counts %d regions, %d bytes, %d records", len(dropped), droppedBytes, dropped[0],
			m.RecoveryDropped, m.RecoveryDroppedBytes, m.RecoveryLostRecords)
		ok = false
	}
	c.lostCounted += m.RecoveryLostRecords
	c.droppedWhole += len(dropped)
	if q := s.NextSeq(); q <= c.h.maxSeqs[lo] {
		c.finding(st, "seq reused", "the recovered spool hands out seq %d again (%d were handed out)", q, c.h.maxSeqs[lo])
		ok = false
	}
	s.Release(nil)
	return ok
}

func (c *checker) report(t *testing.T, n int, took time.Duration) {
	t.Logf("%d crash states in %v (%v each): %v; %d with records reported durable to check "+
		"(%d record checks: emergency %d, high %d, normal %d, bulk %d); %d whole frames found on the media; "+
		"%d records recovered in all (max %d at once); %d damaged regions counted by recovery",
		n, took.Round(time.Millisecond), (took / time.Duration(max(n, 1))).Round(time.Microsecond), c.states,
		c.statesWithDur, c.durableChecks[0]+c.durableChecks[1]+c.durableChecks[2]+c.durableChecks[3],
		c.durableChecks[3], c.durableChecks[2], c.durableChecks[1], c.durableChecks[0],
		c.intactChecked, c.recovered, c.maxRecords, c.droppedRegions)
	t.Logf("recovery counted %d records lost; %d records whole on the media were not kept (each must be counted)",
		c.lostCounted, c.droppedWhole)
	if sealed {
		t.Logf("sealed: %d whole sealed frames authenticated on the media, no nonce serving two records", c.sealedFrames)
		if c.sealedFrames == 0 {
			t.Errorf("sealed run found no sealed frame on the media: the checker opened nothing")
		}
	}
	t.Logf("time per state: replay %v, attach and mount (ext4 journal recovery) %v, spool checks %v, unmount %v",
		c.took[0]/time.Duration(max(n, 1)), c.took[1]/time.Duration(max(n, 1)),
		c.took[2]/time.Duration(max(n, 1)), c.took[3]/time.Duration(max(n, 1)))
	if c.lostStates > 0 {
		t.Errorf("powercut: %d of %d crash states lost or corrupted data; states per finding %v:\n%s",
			c.lostStates, n, c.kinds, strings.Join(c.findings, "\n"))
	}
	if n < 500 && os.Getenv("KESTREL_POWERCUT_STATES") == "" {
		t.Errorf("only %d crash states in the log (want at least 500): the workload is too short", n)
	}
	if c.statesWithDur < n/4 {
		t.Errorf("only %d of %d crash states had a record reported durable to check", c.statesWithDur, n)
	}
}
