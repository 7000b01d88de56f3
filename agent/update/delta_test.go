package update

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// xorDiff is a delta format with behaviour, for the updater's side of
// deltas (transport/delta is the real one): the new size, then the new
// bytes XORed with the old ones.
func xorDiff(old, new []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(new)))
	for i, b := range new {
		out = append(out, b^old[i%len(old)])
	}
	return out
}

func xorPatch(old, patch []byte, max int64) ([]byte, error) {
	if len(patch) < 8 {
		return nil, errors.New("short patch")
	}
	n := binary.LittleEndian.Uint64(patch)
	if int64(n) > max || int(n) != len(patch)-8 {
		return nil, fmt.Errorf("patch for %d bytes", n)
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = patch[8+i] ^ old[i%len(old)]
	}
	return out, nil
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func deltaRelease(old, new []byte) (*fleet.Release, []byte) {
	blob := xorDiff(old, new)
	return &fleet.Release{Seq: 2, Version: "v2", SHA256: hexSum(new), Size: int64(len(new)), ChunkSize: fleet.MinChunkSize,
		Delta: &fleet.Delta{Format: fleet.DeltaFormat, BaseSeq: 1, BaseSHA256: hexSum(old), SHA256: hexSum(blob), Size: int64(len(blob))}}, blob
}

func fetchAll(t *testing.T, u *Updater, blob []byte) {
	t.Helper()
	for {
		i, ok := u.Next()
		if !ok {
			return
		}
		if err := u.Write(i, blob[i*fleet.MinChunkSize:min((i+1)*fleet.MinChunkSize, len(blob))]); err != nil {
			t.Fatal(err)
		}
	}
}

// A delta against the running binary is fetched instead of the binary
// and patched into it before the hash check and the switch.
func TestDeltaApplied(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(t.TempDir(), "kestrel")
	old := make([]byte, 6000)
	rand.Read(old)
	os.WriteFile(exe, old, 0o755)
	new := append(bytes.Clone(old[:5000]), []byte("a new tail of the binary")...)
	r, blob := deltaRelease(old, new)
	u, err := Open(Options{Dir: dir, Executable: exe, Patch: xorPatch})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.Stage(r, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := u.StagingBlobSHA256(); got != r.Delta.SHA256 {
		t.Fatalf("fetching %s, want the delta %s", got, r.Delta.SHA256)
	}
	if rep, _ := u.Report(); !rep.Delta || rep.Size != int64(len(blob)) {
		t.Fatalf("report %+v: want a delta of %d bytes", rep, len(blob))
	}
	fetchAll(t, u, blob)
	if err := u.Finish(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(u.Binary("a")); !bytes.Equal(got, new) {
		t.Fatal("slot a does not hold the patched binary")
	}
}

// No patcher, another base, or a delta that does not give the binary:
// the whole binary is fetched.
func TestDeltaFallsBackToWhole(t *testing.T) {
	old := make([]byte, 3000)
	rand.Read(old)
	new := append(bytes.Clone(old), 1, 2, 3)
	for _, c := range []struct {
		name  string
		patch func([]byte, []byte, int64) ([]byte, error)
		base  []byte
	}{
		{"no patcher", nil, old},
		{"another base", xorPatch, []byte("another binary entirely")},
	} {
		t.Run(c.name, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), "kestrel")
			os.WriteFile(exe, c.base, 0o755)
			u, _ := Open(Options{Dir: t.TempDir(), Executable: exe, Patch: c.patch})
			defer u.Close()
			r, _ := deltaRelease(old, new)
			if err := u.Stage(r, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if got := u.StagingBlobSHA256(); got != r.SHA256 {
				t.Fatalf("fetching %s, want the whole binary %s", got, r.SHA256)
			}
		})
	}
	t.Run("patch gives another binary", func(t *testing.T) {
		exe := filepath.Join(t.TempDir(), "kestrel")
		os.WriteFile(exe, old, 0o755)
		wrong := func(o, p []byte, max int64) ([]byte, error) { b, err := xorPatch(o, p, max); b[0] ^= 1; return b, err }
		u, _ := Open(Options{Dir: t.TempDir(), Executable: exe, Patch: wrong})
		defer u.Close()
		r, blob := deltaRelease(old, new)
		u.Stage(r, []byte(`{}`))
		fetchAll(t, u, blob)
		if err := u.Finish(); !errors.Is(err, fleet.ErrDeltaFailed) {
			t.Fatalf("Finish = %v, want ErrDeltaFailed", err)
		}
		if u.CurrentBinary() != "" {
			t.Fatal("switched to a wrongly patched binary")
		}
		u.Stage(r, []byte(`{}`))
		if got := u.StagingBlobSHA256(); got != r.SHA256 {
			t.Fatalf("after a failed delta fetching %s, want the whole binary", got)
		}
		fetchAll(t, u, new)
		if err := u.Finish(); err != nil {
			t.Fatal(err)
		}
	})
}
