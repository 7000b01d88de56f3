package wire

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestBitCodes checks every code against its cost function and its
// decoder, at the edges (0, 2^64-1, k = 0 and 63) and at random.
func TestBitCodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := []uint64{0, 1, 2, 3, 7, 8, 255, 1 << 32, math.MaxUint64 - 1, math.MaxUint64, 1 << 63}
	for i := 0; i < 300; i++ {
		vals = append(vals, rng.Uint64()>>rng.IntN(64))
	}
	for _, k := range []uint{0, 1, 5, 31, 62, 63} {
		var w bitWriter
		var want uint
		for _, v := range vals {
			w.writeEG(v, k)
			w.writeRice(v, k)
			w.writeVarbits(v)
			w.write(v, 64)
			w.write(v, 3)
			want += egBits(v, k) + riceBits(v, k) + varbitsLen(v) + 64 + 3
		}
		got := uint(len(w.buf))*8 + w.nacc
		if got != want {
			t.Fatalf("k=%d: wrote %d bits, cost functions say %d", k, got, want)
		}
		r := bitReader{b: w.flush()}
		for _, v := range vals {
			if g := r.readEG(k); g != v {
				t.Fatalf("EG k=%d: %d, want %d", k, g, v)
			}
			if g := r.readRice(k); g != v {
				t.Fatalf("Rice k=%d: %d, want %d", k, g, v)
			}
			if g := r.readVarbits(); g != v {
				t.Fatalf("varbits: %d, want %d", g, v)
			}
			if g := r.read(64); g != v {
				t.Fatalf("raw: %d, want %d", g, v)
			}
			if g := r.read(3); g != v&7 {
				t.Fatalf("3 bits: %d, want %d", g, v&7)
			}
		}
		if r.bad || r.left() >= 8 {
			t.Fatalf("k=%d: bad %v, %d bits left", k, r.bad, r.left())
		}
		r.read(8)
		if !r.bad {
			t.Fatal("reading past the end did not fail")
		}
	}
	for _, v := range []int64{0, -1, 1, math.MinInt64, math.MaxInt64} {
		if unzigzag(zigzag(v)) != v {
			t.Fatalf("zigzag %d", v)
		}
	}
}
