package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/otafake"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/delta"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// otaRig is a release key, two real ELF binaries of this machine (the base
// is Debian's /usr/bin/true; the new one the same with a patched stretch
// and an appended block, as between two builds) and their files.
type otaRig struct {
	dir, key, pub  string
	base, bin      []byte
	basePath, path string
	keyring        []string
}

func newOTARig(t *testing.T) *otaRig {
	t.Helper()
	dir := t.TempDir()
	r := &otaRig{dir: dir, key: filepath.Join(dir, "release.key"), pub: filepath.Join(dir, "release.pub")}
	if code, _, e := fleetRun(t, "keygen", "--out", filepath.Join(dir, "release")); code != 0 {
		t.Fatal(e)
	}
	pub, _ := os.ReadFile(r.pub)
	r.keyring = []string{fleet.RoleRelease + ":" + strings.TrimSpace(string(pub))}
	base, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Skipf("no /usr/bin/true to use as a real binary: %v", err)
	}
	r.base = base
	r.bin = append([]byte(nil), base...)
	copy(r.bin[len(r.bin)/2:], []byte("kestrel release 2: a changed stretch of code"))
	r.bin = append(r.bin, []byte(strings.Repeat("new section ", 300))...)
	r.basePath, r.path = filepath.Join(dir, "kestrel-1"), filepath.Join(dir, "kestrel-2")
	os.WriteFile(r.basePath, r.base, 0o644)
	os.WriteFile(r.path, r.bin, 0o644)
	return r
}

func (r *otaRig) platform() fleet.Platform {
	return fleet.Platform{GOOS: "linux", GOARCH: runtime.GOARCH}
}

// sign runs release sign for release 2 (from base 1) with extra flags.
func (r *otaRig) sign(t *testing.T, name string, extra ...string) (manifest, deltaFile string) {
	t.Helper()
	manifest, deltaFile = filepath.Join(r.dir, name+".json"), filepath.Join(r.dir, name+".delta")
	args := append([]string{"release", "sign", "--fleet", "met", "--version", "2.0.0", "--seq", "2", "--binary", r.path,
		"--goarch", runtime.GOARCH, "--expires", "1h", "--chunk-size", "4096", "--sign-key", r.key,
		"--out", manifest, "--delta-out", deltaFile}, extra...)
	if code, out, e := fleetRun(t, args...); code != 0 {
		t.Fatalf("release sign: %d\n%s\n%s", code, out, e)
	}
	return manifest, deltaFile
}

func (r *otaRig) device(t *testing.T, url, id string, groups []string, outcome otafake.Outcome) *otafake.Device {
	t.Helper()
	return otafake.Start(t, url, &otafake.Device{Fleet: "met", ID: id, Groups: groups, Trusted: r.keyring, Platform: r.platform(),
		RunningSeq: 1, RunningVersion: "1.0.0", Base: r.base, Outcome: outcome, ChunkWait: 15 * time.Second})
}

func TestReleaseSign(t *testing.T) {
	r := newOTARig(t)
	manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1", "--group", "north", "--min-from", "1")
	b, _ := os.ReadFile(manifest)
	rel, err := fleet.DecodeRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := fleet.NewKeyring(r.keyring)
	if _, err := kr.VerifyRelease(rel, 1); err != nil {
		t.Fatalf("the manifest does not verify with the release key: %v", err)
	}
	if rel.Scope != "group/north" || rel.Seq != 2 || rel.Size != int64(len(r.bin)) || rel.SHA256 != sha256hex(r.bin) || rel.Delta == nil || rel.MinFromSeq != 1 {
		t.Fatalf("manifest %+v", rel)
	}
	d, _ := os.ReadFile(deltaFile)
	got, err := delta.Patch(r.base, d, rel.Size)
	if err != nil || sha256hex(got) != rel.SHA256 {
		t.Fatalf("the delta does not give the binary: %v", err)
	}
	t.Logf("binary %d bytes, delta %d bytes", len(r.bin), len(d))

	// Refusals: an expired (or never valid) manifest, a binary for
	// another architecture, an existing file.
	other := map[string]string{"amd64": "arm64"}[runtime.GOARCH]
	if other == "" {
		other = "amd64"
	}
	for name, args := range map[string][]string{
		"expired":          {"--expires", "-1h"},
		"no expiry":        {"--expires", "0s"},
		"wrong arch":       {"--goarch", other},
		"base without seq": {"--base-binary", r.basePath},
	} {
		out := filepath.Join(r.dir, "refused.json")
		full := append([]string{"release", "sign", "--fleet", "met", "--version", "2", "--seq", "2", "--binary", r.path,
			"--goarch", runtime.GOARCH, "--expires", "1h", "--sign-key", r.key, "--out", out}, args...)
		if code, _, e := fleetRun(t, full...); code == 0 {
			t.Errorf("%s: signed", name)
		} else if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: refused (%s) but wrote the manifest", name, strings.TrimSpace(e))
		}
	}
	if code, _, e := fleetRun(t, "release", "sign", "--fleet", "met", "--version", "2", "--seq", "2", "--binary", r.path,
		"--goarch", runtime.GOARCH, "--expires", "1h", "--sign-key", r.key, "--out", manifest); code == 0 || !strings.Contains(e, "exists") {
		t.Errorf("overwrote an existing manifest: %d %s", code, e)
	}
}

func pushArgs(b *broker.Broker, extra ...string) []string {
	return append([]string{"update", "push", "--broker", b.URL(), "--fleet", "met", "--timeout", "30s", "--json"}, extra...)
}

func decodePush(t *testing.T, out string) updatePushReport {
	t.Helper()
	var rep updatePushReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	return rep
}

// TestUpdatePush: three devices (two with the base, so they take the
// delta; one without, so it takes the whole binary) all end good, on the
// in-process broker and on Debian's mosquitto.
func TestUpdatePush(t *testing.T) {
	for _, kind := range []string{"mochi", "mosquitto"} {
		t.Run(kind, func(t *testing.T) {
			var b *broker.Broker
			if kind == "mochi" {
				b = broker.StartMochi(t)
			} else {
				if _, err := broker.MosquittoPath(); err != nil {
					t.Skipf("skipping: %v", err)
				}
				b = broker.StartMosquitto(t)
			}
			r := newOTARig(t)
			manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1")
			devs := []*otafake.Device{r.device(t, b.URL(), "bwc-0001", []string{"north"}, nil), r.device(t, b.URL(), "bwc-0002", []string{"north"}, nil)}
			full := r.device(t, b.URL(), "bwc-0003", []string{"south"}, nil)
			full.Base = nil
			devs = append(devs, full)
			code, out, e := fleetRun(t, append(pushArgs(b), manifest, r.path, deltaFile)...)
			if code != 0 {
				t.Fatalf("push: %d\n%s\n%s", code, out, e)
			}
			rep := decodePush(t, out)
			if rep.Counts[fleet.UpdateGood] != 3 || len(rep.Devices) != 3 || rep.ChunksPublished != rep.Chunks {
				t.Fatalf("report %+v", rep)
			}
			for _, d := range rep.Devices {
				if d.Signature != fleet.VerdictVerified {
					t.Errorf("%s: signature %q", d.Device, d.Signature)
				}
			}
			for i, d := range devs {
				if seq, v := d.Running(); seq != 2 || v != "2.0.0" {
					t.Errorf("%s runs %d %s", d.ID, seq, v)
				}
				rs := d.Reports()
				last := rs[len(rs)-1]
				if wantDelta := i < 2; last.Delta != wantDelta {
					t.Errorf("%s: delta %v, want %v", d.ID, last.Delta, wantDelta)
				}
			}
			// status from the broker: every device good on seq 2, signatures verified.
			code, out, e = fleetRun(t, "update", "status", "--broker", b.URL(), "--fleet", "met", "--json", "--wait", "1s")
			if code != 0 {
				t.Fatalf("status: %d %s", code, e)
			}
			var st updateStatusReport
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatal(err)
			}
			if len(st.Devices) != 3 || len(st.Desired) != 1 || st.Desired[0].Scope != "all" {
				t.Fatalf("status %+v", st)
			}
			for _, d := range st.Devices {
				if d.State != fleet.UpdateGood || d.Seq != 2 || d.RunningSeq != 2 || d.Signature != fleet.VerdictVerified {
					t.Errorf("status row %+v", d)
				}
			}
			// clear removes the manifest and every chunk.
			if code, out, e := fleetRun(t, "update", "clear", "--broker", b.URL(), "--fleet", "met", "--all", "--json"); code != 0 {
				t.Fatalf("clear: %d %s %s", code, out, e)
			}
			if n := retainedUnder(t, b, "kestrel/v1/met/_release/#"); n != 0 {
				t.Errorf("%d chunks still retained after clear", n)
			}
			if n := retainedUnder(t, b, "kestrel/v1/met/+/update/desired"); n != 0 {
				t.Errorf("%d manifests still retained after clear", n)
			}
		})
	}
}

// retainedUnder counts the retained messages a new subscriber gets.
func retainedUnder(t *testing.T, b *broker.Broker, filter string) int {
	t.Helper()
	bf := brokerFlags(b.URL())
	cl, col, err := fleetSubscribe(context.Background(), bf, "count", filter)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(100)
	col.settle(context.Background(), 300*time.Millisecond, 3*time.Second)
	n := 0
	for _, m := range col.take() {
		if len(m.Payload()) > 0 {
			n++
		}
	}
	return n
}

// TestUpdatePushStagedStopsOnRevert: the canary's health gate fails
// (reverted); the rollout stops there: nobody else gets the release, no
// manifest stays retained, and the exit status is 1.
func TestUpdatePushStagedStopsOnRevert(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1", "--group", "north")
	canary := r.device(t, b.URL(), "bwc-0001", []string{"north"}, otafake.Revert("health gate: broker not reached within 2m0s"))
	var rest []*otafake.Device
	for i := 2; i <= 4; i++ {
		rest = append(rest, r.device(t, b.URL(), fmt.Sprintf("bwc-%04d", i), []string{"north"}, nil))
	}
	code, out, e := fleetRun(t, append(pushArgs(b, "--group", "north", "--canary", "1", "--stages", "50%,100%"), manifest, r.path, deltaFile)...)
	if code != 1 {
		t.Fatalf("push: exit %d, want 1\n%s\n%s", code, out, e)
	}
	rep := decodePush(t, out)
	if !rep.Stopped || len(rep.Stages) != 1 || rep.Stages[0].Name != "canary" || len(rep.Devices) != 1 || rep.Devices[0].Result != fleet.UpdateReverted {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(reportDetail(rep.Devices[0].Errors), "health gate") {
		t.Errorf("the revert's reason is not in the report: %+v", rep.Devices[0])
	}
	if seq, _ := canary.Running(); seq != 1 {
		t.Errorf("canary runs %d", seq)
	}
	time.Sleep(300 * time.Millisecond)
	for _, d := range rest {
		if seq, _ := d.Running(); seq != 1 || len(d.Reports()) != 0 {
			t.Errorf("%s got the release after the canary failed: running %d, reports %+v", d.ID, seq, d.Reports())
		}
	}
	if n := retainedUnder(t, b, "kestrel/v1/met/+/update/desired"); n != 0 {
		t.Errorf("%d manifests left retained after the stop", n)
	}
	if n := retainedUnder(t, b, "kestrel/v1/met/_group/+/update/desired"); n != 0 {
		t.Errorf("the group's manifest was published after the stop")
	}
}

// TestUpdatePushStaged: a canary and two stages, every device good; the
// staged devices' device-scope manifests are removed at the end and only
// the group's stays.
func TestUpdatePushStaged(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1", "--group", "north")
	var devs []*otafake.Device
	for i := 1; i <= 4; i++ {
		devs = append(devs, r.device(t, b.URL(), fmt.Sprintf("bwc-%04d", i), []string{"north"}, nil))
	}
	code, out, e := fleetRun(t, append(pushArgs(b, "--group", "north", "--canary", "1", "--stages", "50%,100%"), manifest, r.path, deltaFile)...)
	if code != 0 {
		t.Fatalf("push: %d\n%s\n%s", code, out, e)
	}
	rep := decodePush(t, out)
	if len(rep.Stages) != 3 || rep.Counts[fleet.UpdateGood] != 4 {
		t.Fatalf("report %+v", rep)
	}
	for _, d := range devs {
		if seq, _ := d.Running(); seq != 2 {
			t.Errorf("%s runs %d", d.ID, seq)
		}
	}
	if n := retainedUnder(t, b, "kestrel/v1/met/+/update/desired"); n != 0 {
		t.Errorf("%d device-scope manifests left retained", n)
	}
	if n := retainedUnder(t, b, "kestrel/v1/met/_group/north/update/desired"); n != 1 {
		t.Errorf("the group's manifest is not retained")
	}
}

// TestUpdatePushRefusals: what push refuses before publishing anything.
func TestUpdatePushRefusals(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	r.device(t, b.URL(), "bwc-0001", []string{"north"}, nil)
	manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1", "--group", "north")
	plain, _ := r.sign(t, "plain")

	// An expired manifest, signed by hand (release sign refuses to).
	priv := mustKey(t, r.key)
	now := time.Now()
	expired, err := fleet.SignRelease([]ed25519.PrivateKey{priv}, fleet.Release{Fleet: "met", Scope: "all", Version: "2", Seq: 2,
		GOOS: "linux", GOARCH: runtime.GOARCH, SHA256: sha256hex(r.bin), Size: int64(len(r.bin)), ChunkSize: 4096,
		SpoolFormats: []int{1}, Issued: now.Add(-2 * time.Hour).UnixMilli(), Expires: now.Add(-time.Hour).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	expiredPath := writeFile(t, r.dir, "expired.json", string(expired))
	otherKey := filepath.Join(r.dir, "other")
	fleetRun(t, "keygen", "--out", otherKey)

	obs := b.Observe("kestrel/v1/met/#")
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"expired":         {[]string{expiredPath, r.path}, "expired"},
		"wrong binary":    {[]string{manifest, r.basePath, deltaFile}, "is not the binary"},
		"missing delta":   {[]string{manifest, r.path}, "names a delta"},
		"delta not named": {[]string{plain, r.path, deltaFile}, "names no delta"},
		"outside target":  {[]string{"--group", "south", manifest, r.path, deltaFile}, "addressed to group/north"},
		"untrusted key":   {[]string{"--pub", otherKey + ".pub", manifest, r.path, deltaFile}, "not pushed"},
		"other fleet":     {[]string{"--fleet", "gmp", manifest, r.path, deltaFile}, "fleet"},
	} {
		code, out, e := fleetRun(t, append(pushArgs(b), c.args...)...)
		if code == 0 || !strings.Contains(e, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q\n%s", name, code, e, c.want, out)
		}
	}
	// Only the fake device's own state is on the broker: nothing was published.
	for _, m := range obs.Messages() {
		if !strings.HasSuffix(m.Topic, "/state") {
			t.Errorf("published %s", m.Topic)
		}
	}
	// The right release key passes --pub; --dry-run publishes nothing.
	code, out, e := fleetRun(t, append(pushArgs(b, "--pub", r.pub, "--dry-run"), manifest, r.path, deltaFile)...)
	if code != 0 || !decodePush(t, out).DryRun {
		t.Fatalf("dry run: %d %s %s", code, out, e)
	}
}

func mustKey(t *testing.T, path string) ed25519.PrivateKey {
	t.Helper()
	ks, err := loadSigningKeys([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	return ks[0]
}

// TestUpdatePushUntrustedReport: a device whose reports are not signed by
// the key its state announces is not believed: its "good" counts as a
// failure.
func TestUpdatePushUntrustedReport(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	manifest, _ := r.sign(t, "rel")
	d := r.device(t, b.URL(), "bwc-0001", nil, nil)
	d.ForgeReports()
	code, out, _ := fleetRun(t, append(pushArgs(b, "--devices", "bwc-0001"), manifest, r.path)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	rep := decodePush(t, out)
	if rep.Devices[0].Result != resultUntrusted {
		t.Fatalf("result %+v", rep.Devices[0])
	}
}

// TestUpdateStatusDB: the platform ingests update/reported into its
// updates table; update status --db shows each device's latest report with
// its signature checked, and --history every step.
func TestUpdateStatusDB(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	manifest, deltaFile := r.sign(t, "rel", "--base-binary", r.basePath, "--base-seq", "1")
	url := "sqlite:" + filepath.Join(t.TempDir(), "k.db")
	st, err := platform.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	in, err := platform.NewIngest(st, platform.IngestOptions{Broker: b.URL(), ClientID: "platform-test", Fleets: []string{"met"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() { cancel(); <-done; st.Close() }()
	waitFor(t, 10*time.Second, in.Connected)
	time.Sleep(200 * time.Millisecond)

	r.device(t, b.URL(), "bwc-0001", nil, nil)
	r.device(t, b.URL(), "bwc-0002", nil, otafake.Revert("health gate: spool did not open"))
	code, out, e := fleetRun(t, append(pushArgs(b), manifest, r.path, deltaFile)...)
	if code != 1 {
		t.Fatalf("push: %d\n%s\n%s", code, out, e)
	}
	var rows []updateRow
	waitFor(t, 10*time.Second, func() bool {
		code, out, _ := fleetRun(t, "update", "status", "--fleet", "met", "--db", url, "--json")
		var rep updateStatusReport
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
			return false
		}
		rows = rep.Devices
		return len(rows) == 2 && terminal(rows[0].State) && terminal(rows[1].State)
	})
	if rows[0].Device != "bwc-0001" || rows[0].State != fleet.UpdateGood || rows[0].RunningSeq != 2 || rows[0].Signature != fleet.VerdictVerified {
		t.Errorf("row %+v", rows[0])
	}
	if rows[1].State != fleet.UpdateReverted || !strings.Contains(rows[1].Reason, "spool did not open") || rows[1].RunningSeq != 1 {
		t.Errorf("row %+v", rows[1])
	}
	code, out, _ = fleetRun(t, "update", "status", "--fleet", "met", "--db", url, "--device", "bwc-0001", "--history", "--json")
	var hist updateStatusReport
	if code != 0 || json.Unmarshal([]byte(out), &hist) != nil {
		t.Fatalf("history: %d %s", code, out)
	}
	var states []string
	for _, h := range hist.Devices {
		states = append(states, h.State)
	}
	if len(states) < 3 || states[0] != fleet.UpdateDownloading || states[len(states)-1] != fleet.UpdateGood {
		t.Errorf("history %v", states)
	}
	// The table form names the reason.
	if code, out, _ := fleetRun(t, "update", "status", "--fleet", "met", "--db", url); code != 0 || !strings.Contains(out, "spool did not open") {
		t.Errorf("table:\n%s", out)
	}
}

// lockedBuffer gathers what a terminal's master side reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUpdatePushProgress: chunk progress is redrawn with \r only on a
// terminal (a pseudo-terminal here); elsewhere push writes plain lines.
func TestUpdatePushProgress(t *testing.T) {
	b := broker.StartMochi(t)
	r := newOTARig(t)
	manifest, _ := r.sign(t, "rel")
	r.device(t, b.URL(), "bwc-0001", nil, nil)
	code, _, e := fleetRun(t, append(pushArgs(b), manifest, r.path)...)
	if code != 0 || strings.Contains(e, "\r") || !strings.Contains(e, "published the binary: 10 chunks") {
		t.Fatalf("not a terminal: exit %d, stderr %q", code, e)
	}

	term, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	slave, err := os.OpenFile(term.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	var seen lockedBuffer
	go io.Copy(&seen, term.Master)
	r.device(t, b.URL(), "bwc-0002", nil, nil)
	var stdout bytes.Buffer
	code = dispatch(append(pushArgs(b, "--device", "bwc-0002"), manifest, r.path),
		stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &stdout, stderr: slave})
	if code != 0 {
		t.Fatalf("push on a terminal: exit %d\n%s", code, stdout.String())
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(seen.String(), "\rbinary: 10/10 chunks") })
	if !strings.Contains(seen.String(), "\r[##############################] 1/1  good 1") {
		t.Errorf("no result bar on the terminal: %q", seen.String())
	}
}
