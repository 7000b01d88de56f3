package ota

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/update"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
	"github.com/kestrel-edge/kestrel/transport/delta"
	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// builds are shared by the tests of one run: v1 (the package's binary),
// v2 (a release) and the broken release, for the host's architecture.
var (
	buildOnce sync.Once
	builds    struct{ dir, v1, v2, broken string }
)

func hostBuilds(t *testing.T) (v1, v2, broken string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kestrel-ota-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir = dir
		builds.v1 = Build(t, filepath.Join(dir, "usr-bin", "kestrel"), "", "v1", runtime.GOARCH)
		builds.v2 = Build(t, filepath.Join(dir, "kestrel-v2"), "", "v2", runtime.GOARCH)
		builds.broken = Build(t, filepath.Join(dir, "broken"), "./hwtest/ota/testdata/broken", "v2-broken", runtime.GOARCH)
	})
	if builds.v2 == "" {
		t.Fatal("builds failed in an earlier test")
	}
	return builds.v1, builds.v2, builds.broken
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// started is a device running the package binary launcher, online.
func started(t *testing.T, launcher string, edit func(*config.Config)) *Env {
	e := New(t, []string{launcher}, edit)
	e.Start()
	online(e)
	return e
}

func online(e *Env) {
	e.WaitReport(30*time.Second, "at start", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood })
}

// A signed release with its chunks retained: the agent downloads it,
// verifies it, switches, restarts into pending verify, passes the health
// gate and reports good; then forged, expired and downgrade manifests are
// refused and audited, and the device stays on the good release.
func TestUpdateGoodThenRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	e := started(t, v1, nil)
	bin := read(t, v2)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	m := e.Manifest(bin, 2, "v2", update.ThisPlatform())
	e.PublishManifest(e.Release, m)
	e.WaitAudit(30*time.Second, "accepted", func(a *fleet.AuditEntry) bool { return a.Result == "accepted" && a.Version == 2 })
	e.WaitReport(30*time.Second, "pending_verify", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdatePendingVerify && r.Seq == 2 })
	r := e.WaitReport(60*time.Second, "good", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood && r.Seq == 2 && r.Running == 2 })
	if r.Signature == nil {
		t.Error("update report is not signed by the device key")
	}
	slot := filepath.Join(e.Dir, "slots", "a", "kestrel")
	if exe := e.Exe(); exe != slot {
		t.Fatalf("agent runs %q, want the new slot %s", exe, slot)
	}
	if st := e.UpdateState(); st.Running.Seq != 2 || st.Running.Slot != "a" || st.Pending != nil {
		t.Fatalf("update state after good: %+v", st)
	}

	other := read(t, v1) // any other binary: the refusals never get to it
	refusals := []struct {
		name, want string
		key        func() []byte
	}{
		{"forged (untrusted key)", "", func() []byte {
			return e.PublishManifest(e.Stranger, e.Manifest(other, 3, "v3-forged", update.ThisPlatform()))
		}},
		{"forged (a config key, not a release key)", "", func() []byte {
			return e.PublishManifest(e.Other, e.Manifest(other, 4, "v4-forged", update.ThisPlatform()))
		}},
		{"expired", "expired", func() []byte {
			x := e.Manifest(other, 5, "v5-expired", update.ThisPlatform())
			x.Issued, x.Expires = time.Now().Add(-2*time.Hour).UnixMilli(), time.Now().Add(-time.Hour).UnixMilli()
			return e.PublishManifest(e.Release, x)
		}},
		{"for a group the device is not in", "does not reach", func() []byte {
			x := e.Manifest(other, 6, "v6-north", update.ThisPlatform())
			x.Scope = "group/north"
			b, err := fleet.SignRelease([]ed25519.PrivateKey{e.Release}, x)
			if err != nil {
				t.Fatal(err)
			}
			// Staged rollouts put a group's manifest on the device's own
			// topic: there, it must still reach the device.
			if err := e.Broker.Server().Publish(fleet.Device(fleetName, deviceID).UpdateTopic(), b, true, 1); err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"downgrade", "not newer", func() []byte {
			return e.PublishManifest(e.Release, e.Manifest(other, 1, "v0-old", update.ThisPlatform()))
		}},
	}
	for _, c := range refusals {
		c.key()
		a := e.WaitAudit(20*time.Second, c.name+" rejected", func(a *fleet.AuditEntry) bool {
			return a.Result == fleet.StatusRejected && strings.Contains(a.Error, c.want) && a.Error != ""
		})
		t.Logf("%s: audited %q", c.name, a.Error)
		e.audits.Reset()
	}
	time.Sleep(2 * time.Second)
	if exe := e.Exe(); exe != slot {
		t.Fatalf("after the refusals the agent runs %q, want %s", exe, slot)
	}
	if st := e.UpdateState(); st.Running.Seq != 2 || st.Staging != nil || st.Pending != nil {
		t.Fatalf("a refused release changed the update state: %+v", st)
	}
	// The state message carried the update: the new binary's birth says
	// it is pending verify.
	var saw bool
	for _, m := range e.data.Messages() {
		if !strings.HasSuffix(m.Topic, "/state") {
			continue
		}
		st, err := mqtt.DecodeState(m.Payload)
		if err != nil {
			continue
		}
		if u, ok := st["update"].(map[string]any); ok && u["state"] == fleet.UpdatePendingVerify && fmt.Sprint(u["seq"]) == "2" {
			saw = true
		}
	}
	if !saw {
		t.Error("no state message said the release was pending verify")
	}
	if n := e.CheckRecords(); n == 0 {
		t.Error("no records reached the broker")
	}
}

// A release that exits at start reverts by itself: its second start
// while pending verify switches the link back, the old binary runs and
// reports why.
func TestBrokenReleaseReverts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, _, broken := hostBuilds(t)
	e := started(t, v1, nil)
	bin := read(t, broken)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	e.PublishManifest(e.Release, e.Manifest(bin, 2, "v2-broken", update.ThisPlatform()))
	r := e.WaitReport(60*time.Second, "reverted", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateReverted && r.Seq == 2 })
	t.Logf("reverted: %s", r.Reason)
	if !strings.Contains(r.Reason, "started again before its health gate passed") || r.Running != 0 {
		t.Fatalf("report: %+v", r)
	}
	if !WaitFor(10*time.Second, func() bool { return e.Exe() == v1 }) {
		t.Fatalf("agent runs %q, want the old binary %s", e.Exe(), v1)
	}
	if !e.LogContains("broken release: exiting at start") {
		t.Error("the broken release never ran")
	}
	if _, err := os.Lstat(filepath.Join(e.Dir, update.CurrentLink)); !os.IsNotExist(err) {
		t.Errorf("current link still there after the revert: %v", err)
	}
	// The same release, still retained, is not tried again after a
	// restart, and nothing new is reported for it.
	e.Stop()
	e.reports.Reset()
	e.Start()
	e.WaitReport(30*time.Second, "at the restart", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateReverted && r.Seq == 2 })
	time.Sleep(3 * time.Second)
	for _, m := range e.reports.Messages() {
		if r, err := fleet.DecodeUpdateReport(m.Payload); err == nil && r.State != fleet.UpdateReverted {
			t.Fatalf("after the restart the device reported %s for seq %d", r.State, r.Seq)
		}
	}
	if st := e.UpdateState(); st.Staging != nil || st.Pending != nil {
		t.Fatalf("the reverted release is being tried again: %+v", st)
	}
}

// A release that runs but fails its health gate (a GPS is configured and
// sends nothing) reverts after update.health_timeout and says why.
func TestHealthGateTimeoutReverts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	silent, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	e := started(t, v1, func(c *config.Config) {
		c.GPS.Port, c.GPS.Baud = silent.Path, 9600
	})
	bin := read(t, v2)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	e.PublishManifest(e.Release, e.Manifest(bin, 2, "v2", update.ThisPlatform()))
	r := e.WaitReport(90*time.Second, "reverted", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateReverted && r.Seq == 2 })
	t.Logf("reverted: %s", r.Reason)
	if !strings.Contains(r.Reason, "health gate not passed within 10s") || !strings.Contains(r.Reason, "sent no valid NMEA sentence") {
		t.Fatalf("reason: %q", r.Reason)
	}
	if !WaitFor(15*time.Second, func() bool { return e.Exe() == v1 }) {
		t.Fatalf("agent runs %q, want the old binary %s", e.Exe(), v1)
	}
}

// A download killed part way resumes from the chunks it has: the second
// run fetches exactly the chunks the state file did not record.
func TestResumeAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	e := started(t, v1, func(c *config.Config) { c.Update.Rate = 2 << 20 })
	bin := read(t, v2)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	e.PublishManifest(e.Release, e.Manifest(bin, 2, "v2", update.ThisPlatform()))
	total := fleet.Chunks(int64(len(bin)), fleet.DefaultChunkSize)
	held := func() int {
		st := e.UpdateState()
		if st.Staging == nil {
			return 0
		}
		n := 0
		for i := 0; i < total; i++ {
			if st.Staging.Have[i/8]&(1<<(i%8)) != 0 {
				n++
			}
		}
		return n
	}
	if !WaitFor(60*time.Second, func() bool { return held() >= total/3 }) {
		t.Fatalf("download did not reach a third (%d of %d chunks)", held(), total)
	}
	e.mu.Lock()
	e.stopped = true // hold the supervisor: no restart until the state is read
	e.mu.Unlock()
	e.Kill()
	<-e.done
	have := held()
	if have == 0 || have == total {
		t.Fatalf("killed with %d of %d chunks held", have, total)
	}
	e.Start()
	e.WaitReport(90*time.Second, "good", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood && r.Seq == 2 })
	var fetched string
	for _, l := range strings.Split(e.Log(), "\n") {
		if strings.Contains(l, "release staged and switched to") {
			_, fetched, _ = strings.Cut(l, "chunks_fetched=")
		}
	}
	want := total - have
	t.Logf("killed at %d of %d chunks held; the restarted agent fetched %s (want %d)", have, total, fetched, want)
	if strings.TrimSpace(fetched) != strconv.Itoa(want) {
		t.Fatalf("after the restart the agent fetched %q chunks, want %d (the rest)", fetched, want)
	}
}

// An armv7 build updates to another armv7 build under qemu-arm: the
// launcher runs through qemu-arm and so does its exec of the new slot.
func TestArmv7UnderQemu(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two armv7 agents")
	}
	qemu, err := exec.LookPath("qemu-arm")
	if err != nil {
		t.Skip("SKIP: qemu-arm not installed (Debian qemu-user); CI has it")
	}
	dir := t.TempDir()
	v1 := Build(t, filepath.Join(dir, "usr-bin", "kestrel"), "", "v1-arm", "arm")
	v2 := Build(t, filepath.Join(dir, "kestrel-v2"), "", "v2-arm", "arm")
	e := New(t, []string{qemu, v1}, func(c *config.Config) { c.Update.HealthTimeout = config.D(60 * time.Second) })
	e.ExtraEnv = []string{update.EnvExecWrapper + "=qemu-arm"}
	e.Start()
	e.WaitReport(60*time.Second, "at start", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood })
	bin := read(t, v2)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	e.PublishManifest(e.Release, e.Manifest(bin, 2, "v2-arm", fleet.Platform{GOOS: "linux", GOARCH: "arm", GOARM: "7"}))
	e.WaitReport(180*time.Second, "good", func(r *fleet.UpdateReport) bool {
		return r.State == fleet.UpdateGood && r.Seq == 2 && r.RunningVersion == "v2-arm"
	})
	if cl := e.Cmdline(); !strings.Contains(cl, filepath.Join(e.Dir, "slots", "a", "kestrel")) {
		t.Fatalf("agent command line %q: not the new slot under qemu-arm", cl)
	}
	// The running armv7 binary says it is v2-arm.
	out, err := exec.Command(qemu, filepath.Join(e.Dir, "slots", "a", "kestrel"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v2-arm") || !strings.Contains(string(out), "arm") {
		t.Fatalf("slot a version: %s %v", out, err)
	}
	sum := sha256.Sum256(bin)
	if st := e.UpdateState(); st.Running.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("running sha %s", st.Running.SHA256)
	}
}

// A manifest with an https:// URL is downloaded from it (the fleet's CA,
// a Range request from the first missing chunk), not from the chunks,
// which are not even published here.
func TestHTTPSURL(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	bin := read(t, v2)
	ca := broker.NewCA(t)
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		http.ServeContent(w, r, "kestrel", time.Now(), bytes.NewReader(bin))
	}))
	srv.TLS = ca.ServerTLS(t)
	srv.StartTLS()
	defer srv.Close()
	cert, key := ca.IssueClient(t, deviceID)
	e := started(t, v1, func(c *config.Config) {
		c.Broker.CAFile, c.Broker.CertFile, c.Broker.KeyFile = ca.CAFile, cert, key
	})
	m := e.Manifest(bin, 2, "v2", update.ThisPlatform())
	m.URL = srv.URL + "/releases/kestrel-v2"
	e.PublishManifest(e.Release, m)
	e.WaitReport(60*time.Second, "good", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood && r.Seq == 2 })
	if exe := e.Exe(); exe != filepath.Join(e.Dir, "slots", "a", "kestrel") {
		t.Fatalf("agent runs %q", exe)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) == 0 || ranges[0] != "bytes=0-" {
		t.Fatalf("requests' ranges: %q", ranges)
	}
}

// Clearing the retained manifest withdraws the release: the download in
// progress stops and the report says why.
func TestWithdrawnRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	e := started(t, v1, func(c *config.Config) { c.Update.Rate = 1 << 20 })
	bin := read(t, v2)
	e.PublishChunks(bin, fleet.DefaultChunkSize)
	m := e.Manifest(bin, 2, "v2", update.ThisPlatform())
	e.PublishManifest(e.Release, m)
	e.WaitReport(30*time.Second, "downloading", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateDownloading && r.Have > 0 })
	if err := e.Broker.Server().Publish(m.Target().UpdateTopic(), nil, true, 1); err != nil {
		t.Fatal(err)
	}
	r := e.WaitReport(30*time.Second, "withdrawn", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateRejected && r.Seq == 2 })
	if !strings.Contains(r.Reason, "withdrawn") {
		t.Fatalf("reason %q", r.Reason)
	}
	if st := e.UpdateState(); st.Staging != nil || st.Pending != nil || st.Running.Seq != 0 {
		t.Fatalf("state after the withdrawal: %+v", st)
	}
	if e.Exe() != v1 {
		t.Fatalf("agent runs %q", e.Exe())
	}
}

// A manifest with a delta against the running binary: the device fetches
// the delta's chunks (not the binary's, which are not published), patches
// its running binary with transport/delta and checks the result.
func TestDeltaUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds two agents")
	}
	v1, v2, _ := hostBuilds(t)
	old, bin := read(t, v1), read(t, v2)
	start := time.Now()
	patch, err := delta.Diff(old, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("delta v1 -> v2: %d bytes for a %d-byte binary (%.1f %%), made in %s", len(patch), len(bin), 100*float64(len(patch))/float64(len(bin)), time.Since(start).Round(time.Millisecond))
	e := started(t, v1, nil)
	e.PublishChunks(patch, fleet.DefaultChunkSize)
	m := e.Manifest(bin, 2, "v2", update.ThisPlatform())
	m.Delta = &fleet.Delta{Format: fleet.DeltaFormat, BaseSeq: 1, BaseSHA256: hexSHA(old), SHA256: hexSHA(patch), Size: int64(len(patch))}
	e.PublishManifest(e.Release, m)
	e.WaitReport(30*time.Second, "downloading a delta", func(r *fleet.UpdateReport) bool {
		return r.State == fleet.UpdateDownloading && r.Delta && r.Size == int64(len(patch))
	})
	e.WaitReport(60*time.Second, "good", func(r *fleet.UpdateReport) bool { return r.State == fleet.UpdateGood && r.Seq == 2 })
	slot := filepath.Join(e.Dir, "slots", "a", "kestrel")
	if got := read(t, slot); !bytes.Equal(got, bin) {
		t.Fatal("slot a does not hold the release")
	}
	if exe := e.Exe(); exe != slot {
		t.Fatalf("agent runs %q", exe)
	}
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
