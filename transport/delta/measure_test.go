package delta

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestMeasureBuilds measures the delta between two real builds, named by
// $KESTREL_DELTA_OLD and $KESTREL_DELTA_NEW (make delta-measure builds
// them from two commits), beside the peers found on PATH in the same run:
// Debian's bsdiff (bzip2 streams), xdelta3 -9 and zstd --patch-from. It
// prints one markdown row per tool for docs/benchmarks.md. Skipped
// without the variables.
func TestMeasureBuilds(t *testing.T) {
	oldPath, newPath := os.Getenv("KESTREL_DELTA_OLD"), os.Getenv("KESTREL_DELTA_NEW")
	if oldPath == "" || newPath == "" {
		t.Skip("set KESTREL_DELTA_OLD and KESTREL_DELTA_NEW (make delta-measure)")
	}
	old, err := os.ReadFile(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	new, err := os.ReadFile(newPath)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	diffTime := time.Since(start)
	start = time.Now()
	got, err := Patch(old, p, int64(len(new)))
	patchTime := time.Since(start)
	if err != nil || !bytes.Equal(got, new) {
		t.Fatalf("patch does not reproduce the new build: %v", err)
	}
	row := func(tool string, size int, diff, patch time.Duration) {
		fmt.Printf("| %s | %d | %d | %d | %.2f %% | %.1f s | %.0f ms |\n", tool, len(old), len(new), size,
			100*float64(size)/float64(len(new)), diff.Seconds(), float64(patch.Microseconds())/1000)
	}
	fmt.Println("| tool | old bytes | new bytes | delta bytes | delta / new | diff time | patch time |")
	fmt.Println("|---|---|---|---|---|---|---|")
	row("kestrel-bsdiff/1 (transport/delta)", len(p), diffTime, patchTime)

	dir := t.TempDir()
	out := filepath.Join(dir, "patch")
	back := filepath.Join(dir, "back")
	for _, peer := range []struct {
		name        string
		diff, patch []string
	}{
		{"bsdiff 4.3 (Debian)", []string{"bsdiff", oldPath, newPath, out}, []string{"bspatch", oldPath, back, out}},
		{"xdelta3 -9 (Debian)", []string{"xdelta3", "-9", "-f", "-e", "-s", oldPath, newPath, out}, []string{"xdelta3", "-f", "-d", "-s", oldPath, out, back}},
		{"zstd -19 --patch-from (Debian)", []string{"zstd", "-q", "-f", "-19", "--long=27", "--patch-from=" + oldPath, newPath, "-o", out},
			[]string{"zstd", "-q", "-f", "-d", "--long=27", "--patch-from=" + oldPath, out, "-o", back}},
	} {
		if _, err := exec.LookPath(peer.diff[0]); err != nil {
			fmt.Printf("| %s | not installed | | | | | |\n", peer.name)
			continue
		}
		start := time.Now()
		if b, err := exec.Command(peer.diff[0], peer.diff[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", peer.name, err, b)
		}
		d := time.Since(start)
		start = time.Now()
		if b, err := exec.Command(peer.patch[0], peer.patch[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s patch: %v\n%s", peer.name, err, b)
		}
		pt := time.Since(start)
		if b, _ := os.ReadFile(back); !bytes.Equal(b, new) {
			t.Fatalf("%s does not reproduce the new build", peer.name)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		row(peer.name, int(st.Size()), d, pt)
	}
}
