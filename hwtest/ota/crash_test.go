package ota

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/update"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// crashChunk: big chunks keep the step count (and the run) small.
const crashChunk = fleet.MaxChunkSize

type crashPoint struct {
	start int    // the supervisor's start (1: the download, 2: the first start of the new slot)
	step  string // agent/update's durable step
	n     int    // its nth occurrence in that process
}

func (c crashPoint) String() string { return fmt.Sprintf("start%d/%s#%d", c.start, c.step, c.n) }

// TestCrashAtEveryUpdateStep kills the agent (SIGKILL) right after each
// durable step of an update: the state file's writes (begin, progress,
// pending, boot, good, reverting, reverted, reported), each chunk write,
// the verified binary's rename and the link switch. At each cut the
// device must hold a bootable state: the current link absent (the
// package's binary) or naming a complete binary whose SHA-256 is the
// release's, never a partial file; the update state readable. After the
// restart the update must end, with every record spooled delivered and no
// sequence gap: good (it resumed), or reverted with a
// reason (a cut during the first start of the new slot counts as a failed
// start, by design). By default a sample of the chunk and progress steps
// runs (the first and the last); KESTREL_OTA_CRASH_ALL=1 runs every one
// (make ota-crash).
//
// SIGKILL stops the process, not the kernel: what it checks is the
// updater's write ordering and its recovery, as hwtest/crash does for the
// spool; the dm-log-writes replay of the same steps is not done yet
// (docs/ota.md).
func TestCrashAtEveryUpdateStep(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	dir := t.TempDir()
	v1 := Build(t, filepath.Join(dir, "usr-bin", "kestrel"), "", "v1", runtime.GOARCH, "updatecrash")
	v2 := Build(t, filepath.Join(dir, "kestrel-v2"), "", "v2", runtime.GOARCH, "updatecrash")
	bin := read(t, v2)
	sum := sha256.Sum256(bin)
	relSHA := hex.EncodeToString(sum[:])
	edit := func(c *config.Config) { c.Remote.MaxMessage = 1 << 20 }

	// A dry run lists the steps each start takes.
	stepsDir := t.TempDir()
	e := New(t, []string{v1}, edit)
	e.StartEnv = func(start int) []string {
		return []string{fmt.Sprintf("KESTREL_UPDATE_STEPS=%s/steps-%d", stepsDir, start)}
	}
	e.Start()
	online(e)
	publish(e, bin)
	e.WaitReport(60*time.Second, "good (dry run)", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood && r.Seq == 2 })
	// The good report's PUBACK makes the last step (reported).
	WaitFor(10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(stepsDir, "steps-2"))
		return strings.Contains(string(b), " reported\n")
	})
	e.Stop()
	points := crashPoints(t, stepsDir, os.Getenv("KESTREL_OTA_CRASH_ALL") != "")
	t.Logf("%d crash points: %v", len(points), points)

	outcomes := map[string]int{}
	for _, p := range points {
		t.Run(p.String(), func(t *testing.T) {
			got := crashOnce(t, v1, bin, relSHA, edit, p)
			outcomes[got]++
		})
	}
	t.Logf("outcomes: %v", outcomes)
}

func publish(e *Env, bin []byte) {
	e.PublishChunks(bin, crashChunk)
	m := e.Manifest(bin, 2, "v2", update.ThisPlatform())
	m.ChunkSize = crashChunk
	e.PublishManifest(e.Release, m)
}

// crashPoints reads the dry run's steps: every step of every start, or
// for the chunk and progress steps only the first and the last.
func crashPoints(t *testing.T, dir string, all bool) []crashPoint {
	t.Helper()
	var out []crashPoint
	files, _ := filepath.Glob(filepath.Join(dir, "steps-*"))
	for _, f := range files {
		var start int
		fmt.Sscanf(filepath.Base(f), "steps-%d", &start)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{} // per pid and step
		var order []string
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			pid, step, _ := strings.Cut(sc.Text(), " ")
			k := pid + " " + step
			if count[k] == 0 {
				order = append(order, k)
			}
			count[k]++
		}
		for _, k := range order {
			_, step, _ := strings.Cut(k, " ")
			n := count[k]
			var ns []int
			switch {
			case all || (step != "chunk" && step != "progress"):
				for i := 1; i <= n; i++ {
					ns = append(ns, i)
				}
			default:
				ns = uniq(1, n)
			}
			for _, i := range ns {
				out = append(out, crashPoint{start, step, i})
			}
		}
	}
	if len(out) < 8 {
		t.Fatalf("dry run took only %d steps: %v", len(out), out)
	}
	return out
}

func uniq(xs ...int) []int {
	var out []int
	for _, x := range xs {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// crashOnce runs one update with a kill at p, checks the device at the
// cut, and returns how the update ended.
func crashOnce(t *testing.T, v1 string, bin []byte, relSHA string, edit func(*config.Config), p crashPoint) string {
	e := New(t, []string{v1}, edit)
	var mu sync.Mutex
	var cut bool
	var cutAt time.Time
	var problems []string
	e.StartEnv = func(start int) []string {
		if start == p.start {
			return []string{fmt.Sprintf("KESTREL_UPDATE_CRASH_AT=%s:%d", p.step, p.n)}
		}
		return nil
	}
	e.AfterExit = func(start int, err error) {
		if start != p.start || err == nil || !strings.Contains(err.Error(), "killed") {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		cut, cutAt = true, time.Now()
		problems = append(problems, bootable(e.Dir, relSHA)...)
	}
	e.Start()
	if p.start == 1 {
		online(e)
	}
	publish(e, bin)
	if !WaitFor(90*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return cut }) {
		t.Fatalf("the agent was never killed at %s", p)
	}
	// How the update ended, as reported after the cut.
	mu.Lock()
	at := cutAt
	mu.Unlock()
	var end *fleet.UpdateReport
	e.WaitReport(90*time.Second, "good or reverted after the cut", func(r *fleet.UpdateReport) bool {
		if r.Seq == 2 && time.UnixMilli(r.Time).After(at) && (r.State == fleet.UpdateGood || r.State == fleet.UpdateReverted) {
			end = r
			return true
		}
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	for _, pr := range problems {
		t.Errorf("at the cut %s: %s", p, pr)
	}
	// The device runs the binary its state names.
	want := v1
	if end.State == fleet.UpdateGood {
		want = filepath.Join(e.Dir, "slots", "a", "kestrel")
	} else if end.Reason == "" {
		t.Errorf("reverted without a reason")
	}
	if !WaitFor(15*time.Second, func() bool { return e.Exe() == want }) {
		t.Errorf("after %s the update ended %s but the agent runs %q, want %q", p, end.State, e.Exe(), want)
	}
	mu.Unlock()
	if n := e.CheckRecords(); n == 0 {
		t.Error("no records reached the broker")
	}
	mu.Lock()
	return end.State
}

// bootable lists what is wrong with the state directory as a power cut
// would leave it: the link must be absent or name a complete binary of
// the release; the state file must parse.
func bootable(dir, relSHA string) []string {
	var out []string
	link := filepath.Join(dir, update.CurrentLink)
	if target, err := os.Readlink(link); err == nil {
		if strings.HasSuffix(target, ".part") {
			out = append(out, "current names a partial file "+target)
		}
		b, err := os.ReadFile(link)
		if err != nil {
			out = append(out, fmt.Sprintf("current -> %s does not resolve: %v", target, err))
		} else if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != relSHA {
			out = append(out, fmt.Sprintf("current -> %s: %d bytes that are not the release", target, len(b)))
		}
		if fi, err := os.Stat(link); err == nil && fi.Mode()&0o100 == 0 {
			out = append(out, "current names a binary that is not executable")
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, update.StateFile)); err == nil {
		var st update.State
		if err := json.Unmarshal(b, &st); err != nil {
			out = append(out, "update.json does not parse: "+err.Error())
		}
	}
	return out
}
