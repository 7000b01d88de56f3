package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
)

// testBinary is a slice of a real executable (this test binary) and a
// changed copy: code moved, bytes edited, a block inserted, a tail cut,
// as between two builds.
func testBinary(t testing.TB, n int) (old, new []byte) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > n {
		b = b[len(b)/4 : len(b)/4+n]
	}
	old = b
	r := rand.New(rand.NewPCG(1, 2))
	new = append([]byte(nil), old[:len(old)/3]...)
	new = append(new, bytes.Repeat([]byte("inserted block "), 200)...)
	new = append(new, old[len(old)/2:]...)
	new = append(new, old[len(old)/3:len(old)/2]...)
	for i := 0; i < len(new)/500; i++ {
		new[r.IntN(len(new))] ^= byte(r.IntN(255) + 1)
	}
	return old, new[:len(new)-1000]
}

func roundTrip(t *testing.T, old, new []byte) []byte {
	t.Helper()
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Patch(old, p, int64(len(new)))
	if err != nil {
		t.Fatalf("patch: %v", err)
	}
	if !bytes.Equal(got, new) {
		t.Fatalf("patched output differs from the new file (%d vs %d bytes)", len(got), len(new))
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	rnd := random(5000)
	cases := map[string][2][]byte{
		"both empty":      {nil, nil},
		"old empty":       {nil, []byte("hello, world")},
		"new empty":       {[]byte("hello, world"), nil},
		"same":            {rnd, rnd},
		"unrelated":       {random(3000), random(4000)},
		"one byte":        {[]byte{1}, []byte{2}},
		"zeros":           {make([]byte, 10000), make([]byte, 12000)},
		"prefix":          {rnd[:2000], rnd},
		"suffix":          {rnd, rnd[1000:]},
		"repeated":        {bytes.Repeat([]byte("abc"), 1000), bytes.Repeat([]byte("abcd"), 1000)},
		"reversed blocks": {rnd, append(append([]byte(nil), rnd[2500:]...), rnd[:2500]...)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { roundTrip(t, c[0], c[1]) })
	}
}

// TestRealBinary: a delta between two versions of real machine code is a
// small fraction of the new file.
func TestRealBinary(t *testing.T) {
	old, new := testBinary(t, 1<<20)
	p := roundTrip(t, old, new)
	t.Logf("old %d, new %d, delta %d bytes (%.1f%%)", len(old), len(new), len(p), 100*float64(len(p))/float64(len(new)))
	if len(p) > len(new)/5 {
		t.Fatalf("delta of %d bytes for a %d-byte file with a few edits: the matches are not found", len(p), len(new))
	}
}

func TestPatchRefuses(t *testing.T) {
	old, new := testBinary(t, 64<<10)
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Patch(old, p, int64(len(new))-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("maxSize below the new size: %v, want ErrTooLarge", err)
	}
	if _, err := Patch(old[1:], p, 1<<30); !errors.Is(err, ErrWrongBase) {
		t.Errorf("another base: %v, want ErrWrongBase", err)
	}
	huge := append([]byte(nil), p...)
	binary.LittleEndian.PutUint64(huge[16:], 1<<62)
	if _, err := Patch(old, huge, 64<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("header claims 4 EiB: %v, want ErrTooLarge", err)
	}
	for _, n := range []int{0, 7, headerSize - 1, headerSize, headerSize + 10, len(p) - 1} {
		if _, err := Patch(old, p[:n], 1<<30); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated to %d bytes: %v, want ErrMalformed", n, err)
		}
	}
	bad := append([]byte(nil), p...)
	bad[0] = 'X'
	if _, err := Patch(old, bad, 1<<30); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad magic: %v", err)
	}
	// A flipped byte in any stream is caught (zstd's checksum or the
	// structure), never silently applied.
	for off := headerSize; off < len(p); off += max(1, (len(p)-headerSize)/50) {
		c := append([]byte(nil), p...)
		c[off] ^= 0x55
		got, err := Patch(old, c, 1<<30)
		if err == nil && !bytes.Equal(got, new) {
			t.Errorf("byte %d flipped: no error and wrong output", off)
		}
	}
	long := append(append([]byte(nil), p...), 0x28, 0xb5, 0x2f, 0xfd, 0)
	if _, err := Patch(old, long, 1<<30); err == nil {
		t.Error("trailing bytes after the extra stream accepted")
	}
}

// TestPatchControlChecks: hand-made control streams that lie are refused.
func TestPatchControlChecks(t *testing.T) {
	old := []byte("0123456789")
	for name, c := range map[string]struct {
		triples    [][3]int64
		diff, extr []byte
		newSize    int64
	}{
		"negative add":     {[][3]int64{{-1, 5, 0}}, nil, []byte("abcde"), 4},
		"add past base":    {[][3]int64{{11, 0, 0}}, make([]byte, 11), nil, 11},
		"seek before base": {[][3]int64{{1, 0, -5}, {1, 0, 0}}, make([]byte, 2), nil, 2},
		"past new size":    {[][3]int64{{0, 6, 0}}, nil, []byte("abcdef"), 5},
		"no progress":      {[][3]int64{{1, 0, 0}, {0, 0, 1}, {1, 0, 0}}, make([]byte, 2), nil, 2},
		"short diff":       {[][3]int64{{4, 0, 0}}, make([]byte, 3), nil, 4},
		"left over extra":  {[][3]int64{{0, 2, 0}}, nil, []byte("abc"), 2},
		"missing triple":   {[][3]int64{{2, 0, 0}}, make([]byte, 2), nil, 4},
	} {
		t.Run(name, func(t *testing.T) {
			p := build(len(old), c.newSize, c.triples, c.diff, c.extr)
			if _, err := Patch(old, p, 1<<20); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v, want ErrMalformed", err)
			}
		})
	}
	// The same builder makes a patch that is accepted, so the cases above
	// fail for their lie and not for the builder.
	p := build(len(old), 4, [][3]int64{{2, 0, 3}, {1, 1, 0}}, []byte{0, 1, 0}, []byte("z"))
	got, err := Patch(old, p, 1<<20)
	if err != nil || string(got) != "025z" {
		t.Fatalf("hand-made patch: %q, %v", got, err)
	}
}

func build(oldSize int, newSize int64, triples [][3]int64, diff, extra []byte) []byte {
	var ctrl bytes.Buffer
	for _, tr := range triples {
		writeTriple(&ctrl, tr[:])
	}
	enc := encoder()
	c, d, e := enc.EncodeAll(ctrl.Bytes(), nil), enc.EncodeAll(zeroRuns(diff), nil), enc.EncodeAll(extra, nil)
	out := make([]byte, headerSize)
	copy(out, magic)
	binary.LittleEndian.PutUint64(out[8:], uint64(oldSize))
	binary.LittleEndian.PutUint64(out[16:], uint64(newSize))
	binary.LittleEndian.PutUint64(out[24:], uint64(len(c)))
	binary.LittleEndian.PutUint64(out[32:], uint64(len(d)))
	return append(append(append(out, c...), d...), e...)
}

// TestSuffixArray: the array read back from index/suffixarray is sorted
// (if Go's serialization changes, Diff still works but this says so).
func TestSuffixArray(t *testing.T) {
	old, _ := testBinary(t, 20000)
	sa := suffixArray(old)
	if len(sa) != len(old) {
		t.Fatalf("suffix array of %d entries for %d bytes: index/suffixarray's serialization changed", len(sa), len(old))
	}
	for i := 1; i < len(sa); i++ {
		if bytes.Compare(old[sa[i-1]:], old[sa[i]:]) >= 0 {
			t.Fatalf("suffixes %d and %d out of order", i-1, i)
		}
	}
}

func BenchmarkDiff(b *testing.B) {
	old, new := testBinary(b, 1<<20)
	b.SetBytes(int64(len(new)))
	for b.Loop() {
		if _, err := Diff(old, new); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPatch(b *testing.B) {
	old, new := testBinary(b, 1<<20)
	p, _ := Diff(old, new)
	b.SetBytes(int64(len(new)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Patch(old, p, int64(len(new))); err != nil {
			b.Fatal(err)
		}
	}
}
