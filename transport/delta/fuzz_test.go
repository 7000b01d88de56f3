package delta

import (
	"bytes"
	"testing"
)

// FuzzPatch: Patch never panics, never returns more than maxSize bytes,
// and whatever it accepts it can account for. The seeds are real patches
// (between slices of this test binary, and small hand cases) and broken
// ones; `make fuzz` runs it for a minute.
func FuzzPatch(f *testing.F) {
	old, new := testBinary(f, 8<<10)
	for _, pair := range [][2][]byte{
		{old, new}, {nil, []byte("abc")}, {[]byte("abc"), nil}, {[]byte("hello world"), []byte("hello, world!")},
	} {
		p, err := Diff(pair[0], pair[1])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pair[0], p)
		f.Add(pair[0], p[:len(p)/2])
		f.Add(pair[0][:len(pair[0])/2], p)
	}
	f.Add([]byte("0123456789"), build(10, 4, [][3]int64{{2, 0, 3}, {1, 1, 0}}, []byte{0, 1, 0}, []byte("z")))
	f.Add([]byte{}, []byte(magic))
	const maxSize = 1 << 20
	f.Fuzz(func(t *testing.T, old, patch []byte) {
		out, err := Patch(old, patch, maxSize)
		if err != nil {
			if out != nil {
				t.Fatal("output with an error")
			}
			return
		}
		if int64(len(out)) > maxSize {
			t.Fatalf("%d bytes out, limit %d", len(out), maxSize)
		}
		h, _ := ReadHeader(patch)
		if int64(len(out)) != h.NewSize {
			t.Fatalf("%d bytes out, header says %d", len(out), h.NewSize)
		}
		// Diff of what came out patches back to it.
		if len(old)+len(out) < 1<<12 {
			p2, err := Diff(old, out)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Patch(old, p2, maxSize)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("re-diff does not round-trip: %v", err)
			}
		}
	})
}
