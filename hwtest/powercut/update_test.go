package powercut

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/agent/update"
	"github.com/kestrel-edge/kestrel/hwtest/kernelrig"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// The update workload (docs/ota.md): an over-the-air update's writes on
// ext4 over dm-log-writes, beside a spool whose records are reported
// durable after each step: the download's chunks (a restart half way, so
// it resumes), the hash check and the slot binary's rename, "pending
// verify", the link switch, the launcher's count of the first start and
// the health gate's mark good. Each crash state is mounted and checked: the
// current link absent or naming a complete binary of the release (never a
// partial one); the update state readable, its recorded chunks really on
// the medium (so the download resumes from them), no completed step lost
// (once switched, pending or good; once good, good); a start (the
// launcher's settle) succeeding; and every spool record reported durable
// kept.
const (
	updateDir     = "kestrel"
	updateSize    = 256 << 10
	updateChunk   = 4 << 10
	resumeAtChunk = 40
)

// updateRelease is the release's binary: pseudo-random bytes from seed,
// made the same in the guest and on the host.
func updateRelease(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 17))
	b := make([]byte, updateSize)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPowerCutUpdateGuest(t *testing.T) {
	kernelrig.SkipOnHost(t)
	seed, _ := strconv.ParseUint(os.Getenv("KESTREL_POWERCUT_SEED"), 10, 64)
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
	mnt := "/mnt"
	if err := unix.Mount(dm.Path, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount ext4 on %s: %v", dm.Path, err)
	}
	os.Remove(filepath.Join(mnt, "ballast"))
	pkg := filepath.Join(mnt, "pkg", "kestrel")
	os.MkdirAll(filepath.Dir(pkg), 0o755)
	if err := os.WriteFile(pkg, []byte("the package's binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, updateDir)
	sp, err := spool.Open(filepath.Join(mnt, spoolDir), spoolOpts, nil)
	if err != nil {
		t.Fatal(err)
	}
	var history bytes.Buffer
	k, durable := 0, 0
	step := func(name string) {
		t.Helper()
		q := sp.NextSeq()
		tk, err := sp.Append(spool.Item{Seq: q, Priority: kestrel.PriorityNormal, Time: time.Now().UnixMilli(), Data: payload(q, kestrel.PriorityNormal)})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-tk.Durable():
		case <-time.After(10 * time.Second):
			t.Fatal("spool record not durable in 10 s")
		}
		if tk.Err() != nil {
			t.Fatal(tk.Err())
		}
		durable++
		k++
		fmt.Fprintf(&history, "%d %s %d\n", k, name, durable)
		if err := dm.Message("mark u" + strconv.Itoa(k)); err != nil {
			t.Fatal(err)
		}
	}

	bin := updateRelease(seed)
	sum := sha256.Sum256(bin)
	_, key, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	manifest, err := fleet.SignRelease([]ed25519.PrivateKey{key}, fleet.Release{Fleet: "rig", Scope: "all", Version: "v2", Seq: 2,
		GOOS: "linux", GOARCH: "amd64", SHA256: hex.EncodeToString(sum[:]), Size: updateSize, ChunkSize: updateChunk,
		SpoolFormats: []int{spool.Format}, Issued: now.UnixMilli(), Expires: now.Add(time.Hour).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	rel := update.Release{Seq: 2, Version: "v2", SHA256: hex.EncodeToString(sum[:]), Size: updateSize, ChunkSize: updateChunk, Manifest: manifest}
	open := func(exe string) *update.Updater {
		u, err := update.Open(update.Options{Dir: dir, Executable: exe, Version: "v1"})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	u := open(pkg)
	if err := u.Begin(rel); err != nil {
		t.Fatal(err)
	}
	step("begin")
	n := updateSize / updateChunk
	for i := 0; i < n; i++ {
		if err := u.Write(i, bin[i*updateChunk:(i+1)*updateChunk]); err != nil {
			t.Fatal(err)
		}
		if (i+1)%16 == 0 {
			step("chunks-" + strconv.Itoa(i+1)) // a flush (64 KiB) has just been made
		}
		if i+1 == resumeAtChunk {
			u.Close() // a restart mid-download: the rest is fetched after it
			step("closed")
			u = open(pkg)
			if err := u.Begin(rel); err != nil {
				t.Fatal(err)
			}
			if next, _ := u.Next(); next != resumeAtChunk {
				t.Fatalf("resumed at chunk %d, want %d", next, resumeAtChunk)
			}
			step("resumed")
		}
	}
	if err := u.Finish(); err != nil {
		t.Fatal(err)
	}
	u.Close()
	step("switched")
	l := open(pkg) // the launcher's start
	if act, err := l.Boot(false); err != nil || act != update.Restart {
		t.Fatalf("launcher Boot = %v, %v", act, err)
	}
	l.Close()
	step("boot")
	nb := open(filepath.Join(dir, update.SlotsDir, "a", update.BinaryName)) // the new binary, gate passed
	if act, err := nb.Boot(true); err != nil || act != update.Run {
		t.Fatalf("new binary Boot = %v, %v", act, err)
	}
	if err := nb.MarkGood(); err != nil {
		t.Fatal(err)
	}
	nb.Close()
	step("good")
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
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
	if _, err := out.Write(history.Bytes()); err != nil {
		t.Fatal(err)
	}
	out.Sync()
	out.Close()
	t.Logf("update workload: %d steps, %d spool records durable", k, durable)
}

type updateStep struct {
	name    string
	durable int
}

// TestPowerCutUpdate runs the update workload on the real-kernel rig and
// checks crash states at every flush and FUA point and between them
// (KESTREL_POWERCUT_UPDATE_STATES, default 160; make powercut-update
// checks 3000).
func TestPowerCutUpdate(t *testing.T) {
	if kernelrig.InGuest() {
		t.Skip("host half")
	}
	if testing.Short() {
		t.Skip("boots the real-kernel rig")
	}
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "replaying crash states mounts them on loop devices: needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		skipUnlessRequired(t, "mkfs.ext4 not found (Debian package e2fsprogs)")
	}
	budget := envInt(t, "KESTREL_POWERCUT_UPDATE_STATES", 160)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KESTREL_POWERCUT_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := makeImage(mkfs, dir, base); err != nil {
		t.Fatal(err)
	}
	data, logImg, evImg := filepath.Join(dir, "data.img"), filepath.Join(dir, "log.img"), filepath.Join(dir, "events.img")
	if err := copyFile(data, base); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		size int64
	}{{logImg, 1 << 30}, {evImg, 1 << 20}} {
		if err := os.WriteFile(f.path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path, f.size); err != nil {
			t.Fatal(err)
		}
	}
	kernelrig.Run(t, kernelrig.Guest{
		Test:    "TestPowerCutUpdateGuest",
		Modules: kernelrig.DiskModules,
		Disks:   []string{data, logImg, evImg},
		Env:     map[string]string{"KESTREL_POWERCUT_SEED": strconv.FormatUint(seed, 10)},
		Report:  "update workload:",
		Timeout: 4 * time.Minute,
	})
	evb, err := os.ReadFile(evImg)
	if err != nil {
		t.Fatal(err)
	}
	evb, _, _ = bytes.Cut(evb, []byte{0})
	steps := []updateStep{{}} // steps[k]: the kth step
	sc := bufio.NewScanner(bytes.NewReader(evb))
	for sc.Scan() {
		var k, d int
		var name string
		if _, err := fmt.Sscanf(sc.Text(), "%d %s %d", &k, &name, &d); err != nil || k != len(steps) {
			t.Fatalf("history line %q", sc.Text())
		}
		steps = append(steps, updateStep{name, d})
	}
	if len(steps) < 8 || steps[len(steps)-1].name != "good" {
		t.Fatalf("the guest's workload did not finish: %d steps", len(steps)-1)
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
	c, err := newChecker(t, wl, nil, base, dir)
	if err != nil {
		t.Fatal(err)
	}
	var umarks []int // entry index of mark uK, K = position + 1
	for i, e := range wl.Entries {
		if e.Flags&FlagMark != 0 && strings.HasPrefix(e.Mark, "u") {
			umarks = append(umarks, i)
		}
	}
	if len(umarks) != len(steps)-1 {
		t.Fatalf("%d marks in the write log for %d steps", len(umarks), len(steps)-1)
	}
	bin := updateRelease(seed)
	sum := sha256.Sum256(bin)
	relSHA := hex.EncodeToString(sum[:])
	outcomes := map[string]int{}
	c.verify = func(st *crashState, mnt string) bool {
		done := 0 // steps surely completed before the cut
		for done < len(umarks) && umarks[done] < st.p {
			done++
		}
		ok, outcome := verifyUpdateState(c, st, mnt, bin, relSHA, steps[:done+1])
		outcomes[outcome]++
		return ok
	}
	states := planStates(wl, budget, newRand(seed))
	t.Logf("seed %d; write log: %d entries (%d flushes, %d FUA, %d step marks); %d crash states planned",
		seed, len(wl.Entries), c.flushes, c.fuas, len(umarks), len(states))
	start := time.Now()
	for i := range states {
		if err := c.check(&states[i]); err != nil {
			t.Fatalf("crash state %d (entry %d): %v", i, states[i].p, err)
		}
	}
	t.Logf("%d crash states in %s: %v; the device at each, after a start: %v", len(states), time.Since(start).Round(time.Millisecond), c.states, outcomes)
	if len(c.findings) > 0 {
		t.Errorf("%d crash states lost something:\n%s\n(by kind: %v)", c.lostStates, strings.Join(c.findings, "\n"), c.kinds)
	}
}

// verifyUpdateState checks one mounted crash state; done are the steps
// completed before the cut (done[0] is the start).
func verifyUpdateState(c *checker, st *crashState, mnt string, bin []byte, relSHA string, done []updateStep) (bool, string) {
	ok := true
	bad := func(kind, format string, args ...any) {
		ok = false
		c.finding(st, kind, format, args...)
	}
	completed := func(name string) bool {
		for _, s := range done {
			if s.name == name {
				return true
			}
		}
		return false
	}
	dir := filepath.Join(mnt, updateDir)
	pkg := filepath.Join(mnt, "pkg", "kestrel")
	checkLink := func(when string) string {
		target, err := os.Readlink(filepath.Join(dir, update.CurrentLink))
		if err != nil {
			return ""
		}
		b, err := os.ReadFile(filepath.Join(dir, update.CurrentLink))
		switch {
		case err != nil:
			bad("link", "%s: current -> %s does not resolve: %v", when, target, err)
		case len(b) != len(bin) || hexSHA(b) != relSHA:
			bad("link", "%s: current -> %s is %d bytes that are not the release", when, target, len(b))
		}
		return target
	}
	if len(done) == 1 {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			return ok, "nothing yet"
		}
	}
	checkLink("at the cut")
	u, err := update.Open(update.Options{Dir: dir, Executable: pkg, Version: "v1"})
	if err != nil {
		bad("state", "update.Open: %v", err)
		return false, "broken"
	}
	defer u.Close()
	s := u.State()
	if sg := s.Staging; sg != nil {
		part, err := os.ReadFile(filepath.Join(dir, update.SlotsDir, sg.Slot, "kestrel.part"))
		if err != nil {
			if !os.IsNotExist(err) || !completed("chunks-64") {
				bad("chunks", "staging recorded but its partial file: %v", err)
			}
		} else {
			for i := 0; i < len(sg.Have)*8 && i*updateChunk < len(bin); i++ {
				if sg.Have[i/8]&(1<<(i%8)) != 0 && !bytes.Equal(part[i*updateChunk:(i+1)*updateChunk], bin[i*updateChunk:(i+1)*updateChunk]) {
					bad("chunks", "chunk %d recorded as held is not on the medium", i)
					break
				}
			}
		}
	}
	held := func() int {
		if s.Staging == nil {
			return 0
		}
		n := 0
		for i := 0; i < len(s.Staging.Have)*8; i++ {
			if s.Staging.Have[i/8]&(1<<(i%8)) != 0 {
				n++
			}
		}
		return n
	}
	past := s.Pending != nil || s.Running.Seq == 2
	switch {
	case completed("good") && !(s.Running.Seq == 2 && s.Pending == nil):
		bad("lost step", "mark good completed, state says running %d pending %v", s.Running.Seq, s.Pending != nil)
	case completed("switched") && !past:
		bad("lost step", "switch completed, state has no pending or good release")
	case completed("closed") && !past && held() < resumeAtChunk:
		bad("lost step", "restart at chunk %d completed, %d chunks recorded", resumeAtChunk, held())
	case completed("begin") && !past && s.Staging == nil:
		bad("lost step", "download begun, no staging recorded")
	}
	act, err := u.Boot(false)
	if err != nil {
		bad("start", "a start (the launcher's settle) failed: %v", err)
	}
	target := checkLink("after a start")
	outcome := "package binary runs"
	after := u.State()
	switch {
	case after.Running.Seq == 2 && target != "":
		outcome = "good release runs"
	case after.Pending != nil && target != "":
		outcome = "pending release starts"
	case after.Staging != nil:
		outcome = "download resumes"
	case after.Last != nil && after.Last.State == fleet.UpdateReverted:
		outcome = "reverted (reported)"
	}
	_ = act
	// Every spool record reported durable before the cut is there.
	want := done[len(done)-1].durable
	sp, err := spool.Open(filepath.Join(mnt, spoolDir), spoolOpts, nil)
	if err != nil {
		bad("spool", "open: %v", err)
	} else {
		if n := sp.Metrics().Records; n < want {
			bad("spool", "%d records reported durable, %d recovered", want, n)
		}
		sp.Close()
	}
	return ok, outcome
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
