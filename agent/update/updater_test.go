package update

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

func release(t *testing.T, seq uint64, size int) (Release, []byte) {
	t.Helper()
	bin := make([]byte, size)
	rand.Read(bin)
	sum := sha256.Sum256(bin)
	return Release{Seq: seq, Version: "v" + string(rune('0'+seq)), SHA256: hex.EncodeToString(sum[:]), Size: int64(size), ChunkSize: fleet.MinChunkSize, Manifest: []byte(`{}`)}, bin
}

func open(t *testing.T, dir, exe string) *Updater {
	t.Helper()
	u, err := Open(Options{Dir: dir, Executable: exe, Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func download(t *testing.T, u *Updater, r Release, bin []byte) {
	t.Helper()
	if err := u.Begin(r); err != nil {
		t.Fatal(err)
	}
	for {
		i, ok := u.Next()
		if !ok {
			break
		}
		end := min((i+1)*r.ChunkSize, len(bin))
		if err := u.Write(i, bin[i*r.ChunkSize:end]); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Finish(); err != nil {
		t.Fatal(err)
	}
}

// The whole path: download into slot a, switch, the launcher's count,
// the gate in the new binary, mark good; the next release goes into b.
func TestInstallSwitchGood(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	u := open(t, dir, pkg)
	r, bin := release(t, 2, 5000)
	download(t, u, r, bin)
	if got := u.CurrentBinary(); got != u.Binary("a") {
		t.Fatalf("current = %q, want slot a", got)
	}
	got, _ := os.ReadFile(u.Binary("a"))
	if !bytes.Equal(got, bin) {
		t.Fatal("slot a does not hold the release")
	}
	if fi, _ := os.Stat(u.Binary("a")); fi.Mode()&0o100 == 0 {
		t.Fatalf("slot binary mode %v: not executable", fi.Mode())
	}
	// The launcher (the package binary) counts the start, then the new
	// binary runs its gate.
	l := open(t, dir, pkg)
	l.mu.Lock()
	run, err := l.settle(nil)
	l.mu.Unlock()
	if err != nil || run != "a" {
		t.Fatalf("settle = %q, %v; want a", run, err)
	}
	n := open(t, dir, u.Binary("a"))
	if act, err := n.Boot(true); err != nil || act != Run {
		t.Fatalf("Boot = %v, %v", act, err)
	}
	if p, ok := n.PendingVerify(); !ok || p.Seq != 2 {
		t.Fatalf("PendingVerify = %+v, %v", p, ok)
	}
	if err := n.MarkGood(); err != nil {
		t.Fatal(err)
	}
	st := open(t, dir, u.Binary("a")).State()
	if st.Running.Seq != 2 || st.Running.Slot != "a" || st.Pending != nil || st.Last.State != fleet.UpdateGood {
		t.Fatalf("state after good: %+v", st)
	}
	r3, bin3 := release(t, 3, 3000)
	n2 := open(t, dir, u.Binary("a"))
	download(t, n2, r3, bin3)
	if got := n2.CurrentBinary(); got != n2.Binary("b") {
		t.Fatalf("second release went to %q, want slot b", got)
	}
}

// A second start while pending verify reverts to the old slot and says why.
func TestSecondStartReverts(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	u := open(t, dir, pkg)
	r, bin := release(t, 2, 3000)
	download(t, u, r, bin)
	for start := 1; start <= 2; start++ {
		l := open(t, dir, pkg)
		l.mu.Lock()
		run, err := l.settle(nil)
		l.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		want := "a"
		if start == 2 {
			want = ""
		}
		if run != want {
			t.Fatalf("start %d runs %q, want %q", start, run, want)
		}
	}
	st := open(t, dir, pkg).State()
	if st.Pending != nil || st.Last == nil || st.Last.State != fleet.UpdateReverted || st.Last.Reason == "" {
		t.Fatalf("after the second start: %+v", st)
	}
	if _, err := os.Lstat(filepath.Join(dir, CurrentLink)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("current link still there: %v", err)
	}
	if !open(t, dir, pkg).WasReverted(r.SHA256) {
		t.Fatal("a reverted release is not remembered")
	}
}

// The gate's failure reverts from inside the new binary, which then
// must exit for the old one to start.
func TestGateRevert(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	r, bin := release(t, 2, 2000)
	download(t, open(t, dir, pkg), r, bin)
	n := open(t, dir, filepath.Join(dir, "slots", "a", "kestrel"))
	if act, err := n.Boot(false); err != nil || act != Run {
		t.Fatalf("Boot = %v, %v", act, err)
	}
	restart, err := n.Revert("broker not reached in 2m")
	if err != nil || !restart {
		t.Fatalf("Revert = %v, %v; want restart", restart, err)
	}
	st := n.State()
	if st.Last.Reason != "broker not reached in 2m" || st.Running.Slot != "" {
		t.Fatalf("state: %+v", st)
	}
}

// Chunks held survive a restart: only the missing ones are fetched again.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	r, bin := release(t, 2, 200*1024+7)
	u := open(t, dir, pkg)
	if err := u.Begin(r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := u.Write(i, bin[i*r.ChunkSize:(i+1)*r.ChunkSize]); err != nil {
			t.Fatal(err)
		}
	}
	u.Close() // flushes
	u = open(t, dir, pkg)
	if err := u.Begin(r); err != nil {
		t.Fatal(err)
	}
	if i, ok := u.Next(); !ok || i != 100 {
		t.Fatalf("resumed at chunk %d, want 100", i)
	}
	fetched := 0
	for {
		i, ok := u.Next()
		if !ok {
			break
		}
		fetched++
		if err := u.Write(i, bin[i*r.ChunkSize:min((i+1)*r.ChunkSize, len(bin))]); err != nil {
			t.Fatal(err)
		}
	}
	if want := fleet.Chunks(r.Size, r.ChunkSize) - 100; fetched != want {
		t.Fatalf("fetched %d chunks after resuming, want %d", fetched, want)
	}
	if err := u.Finish(); err != nil {
		t.Fatal(err)
	}
}

// A binary that does not hash to its manifest never becomes runnable.
func TestMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	r, bin := release(t, 2, 3000)
	u := open(t, dir, pkg)
	if err := u.Begin(r); err != nil {
		t.Fatal(err)
	}
	bin[5] ^= 1
	for i := 0; i < 3; i++ {
		if err := u.Write(i, bin[i*1024:min((i+1)*1024, len(bin))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Write(0, bin[:10]); err == nil {
		t.Fatal("a short chunk was accepted")
	}
	if err := u.Finish(); err == nil {
		t.Fatal("a corrupt binary was accepted")
	}
	if u.CurrentBinary() != "" {
		t.Fatal("the link was switched to a corrupt binary")
	}
	if st := u.State(); st.Last.State != fleet.UpdateFailed {
		t.Fatalf("last = %+v", st.Last)
	}
	if _, err := os.Stat(u.Binary("a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a corrupt binary sits in the slot")
	}
}

// A power cut between recording "pending verify" and the link rename: the
// next start finishes the switch.
func TestRollForward(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	r, bin := release(t, 2, 2000)
	download(t, open(t, dir, pkg), r, bin)
	os.Remove(filepath.Join(dir, CurrentLink)) // as if the rename never reached the disk
	l := open(t, dir, pkg)
	l.mu.Lock()
	run, err := l.settle(nil)
	l.mu.Unlock()
	if err != nil || run != "a" || l.CurrentBinary() != l.Binary("a") {
		t.Fatalf("settle = %q, %v; link %q", run, err, l.CurrentBinary())
	}
}

// A corrupt state file is set aside and the device carries on with the
// slot it runs from, its release number taken from the slot's manifest.
func TestCorruptState(t *testing.T) {
	dir := t.TempDir()
	u := open(t, dir, filepath.Join(t.TempDir(), "kestrel"))
	_ = u
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{not json"), 0o600)
	u2 := open(t, dir, filepath.Join(t.TempDir(), "kestrel"))
	if st := u2.State(); st.Running.Slot != "" || st.Pending != nil {
		t.Fatalf("state: %+v", st)
	}
	m, _ := filepath.Glob(filepath.Join(dir, StateFile+".corrupt-*"))
	if len(m) != 1 {
		t.Fatalf("corrupt state not kept aside: %v", m)
	}
}

// A link changed by hand: the state follows the binary that runs.
func TestHandSwitchFollowed(t *testing.T) {
	dir := t.TempDir()
	pkg := filepath.Join(t.TempDir(), "kestrel")
	u := open(t, dir, pkg)
	r, bin := release(t, 2, 2000)
	download(t, u, r, bin)
	n := open(t, dir, u.Binary("a"))
	n.Boot(false)
	n.MarkGood()
	os.Remove(filepath.Join(dir, CurrentLink)) // the fitter goes back to the package's binary
	p := open(t, dir, pkg)
	if act, err := p.Boot(false); err != nil || act != Run {
		t.Fatalf("Boot = %v, %v", act, err)
	}
	if st := p.State(); st.Running.Slot != "" || st.Running.Seq != 0 {
		t.Fatalf("running = %+v, want the package's binary", st.Running)
	}
}
