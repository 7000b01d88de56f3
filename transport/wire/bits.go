package wire

import "math/bits"

// bitWriter appends bits, most significant first, to a byte slice. It
// never allocates when buf has capacity for the output.
type bitWriter struct {
	buf  []byte
	acc  uint64 // pending bits, right-aligned
	nacc uint   // number of pending bits (< 8 between calls)
}

// write appends the low n bits of v (n <= 64).
func (w *bitWriter) write(v uint64, n uint) {
	for n > 0 {
		// Feed at most 56 bits at a time so acc never overflows.
		c := n
		if c > 56 {
			c = 56
		}
		n -= c
		chunk := v >> n
		if c < 64 {
			chunk &= 1<<c - 1
		}
		w.acc = w.acc<<c | chunk
		w.nacc += c
		for w.nacc >= 8 {
			w.nacc -= 8
			w.buf = append(w.buf, byte(w.acc>>w.nacc))
		}
		w.acc &= 1<<w.nacc - 1
	}
}

// zeros appends n zero bits.
func (w *bitWriter) zeros(n uint) {
	for n > 56 {
		w.write(0, 56)
		n -= 56
	}
	w.write(0, n)
}

// flush pads the last byte with zero bits.
func (w *bitWriter) flush() []byte {
	if w.nacc > 0 {
		w.buf = append(w.buf, byte(w.acc<<(8-w.nacc)))
		w.acc, w.nacc = 0, 0
	}
	return w.buf
}

// bitReader reads what bitWriter wrote. Reading past the end sets err
// and returns zeros, so decoders check err once per column, not per bit.
type bitReader struct {
	b   []byte
	pos uint // bit position
	bad bool
}

func (r *bitReader) left() uint { return uint(len(r.b))*8 - r.pos }

func (r *bitReader) read(n uint) uint64 {
	if n == 0 {
		return 0
	}
	if r.bad || n > 64 || n > r.left() {
		r.bad = true
		return 0
	}
	var v uint64
	for n > 0 {
		byteIdx := r.pos >> 3
		off := r.pos & 7
		avail := 8 - off
		take := avail
		if take > n {
			take = n
		}
		cur := uint64(r.b[byteIdx]>>(avail-take)) & (1<<take - 1)
		v = v<<take | cur
		r.pos += take
		n -= take
	}
	return v
}

// countZeros reads zero bits up to and including the next one bit and
// returns how many zeros it read; more than max zeros is an error.
func (r *bitReader) countZeros(max uint) uint {
	var z uint
	for {
		if r.bad || r.pos >= uint(len(r.b))*8 {
			r.bad = true
			return 0
		}
		byteIdx := r.pos >> 3
		off := r.pos & 7
		rest := r.b[byteIdx] << off // remaining bits of this byte, left-aligned
		if rest != 0 {
			lz := uint(bits.LeadingZeros8(rest))
			z += lz
			r.pos += lz + 1
			if z > max {
				r.bad = true
				return 0
			}
			return z
		}
		z += 8 - off
		r.pos += 8 - off
		if z > max {
			r.bad = true
			return 0
		}
	}
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// Exponential-Golomb code of order k (ITU-T H.264 section 9.1 uses k=0):
// q = u>>k is sent as q+1 in binary preceded by as many zeros as that has
// bits after its leading one, then the low k bits of u follow. Small values
// cost few bits and a rare large one costs about twice its length, never
// more: an outlier in a batch cannot blow up like a Rice code's unary part.

// egBits is the cost in bits of u under order k.
func egBits(u uint64, k uint) uint {
	q := u >> k
	n := uint(bits.Len64(q + 1))
	if q == ^uint64(0) { // q+1 wraps: 65 significant bits
		n = 65
	}
	return 2*n - 1 + k
}

func (w *bitWriter) writeEG(u uint64, k uint) {
	q := u >> k
	m := q + 1 // may wrap to 0 when q is all ones; the leading one is implied below
	n := uint(bits.Len64(m))
	if q == ^uint64(0) {
		n = 65
	}
	w.zeros(n - 1)
	w.write(1, 1)
	w.write(m, n-1) // low n-1 bits of q+1
	if k > 0 {
		w.write(u, k)
	}
}

func (r *bitReader) readEG(k uint) uint64 {
	z := r.countZeros(64)
	low := r.read(z)
	var m uint64
	if z < 64 {
		m = 1<<z | low
	} else {
		m = low // the 65th bit falls off: q+1 wrapped
	}
	q := m - 1
	return q<<k | r.read(k)
}

// writeVarbits writes u as its bit length n (at least 1) less one in
// Exp-Golomb order 0, then its bits below the leading one (for n = 1, the
// one bit u): 2 bits for 0 or 1, 4 for 2 or 3, 38 for a 30-bit latitude.
// It carries first values and steps, which are small except for lat/lon.
func (w *bitWriter) writeVarbits(u uint64) {
	n := uint(bits.Len64(u))
	if n <= 1 {
		w.write(1, 1) // EG0(0)
		w.write(u, 1)
		return
	}
	w.writeEG(uint64(n-1), 0)
	w.write(u, n-1)
}

func (r *bitReader) readVarbits() uint64 {
	n1 := r.readEG(0)
	if n1 == 0 {
		return r.read(1)
	}
	if n1 > 63 {
		r.bad = true
		return 0
	}
	return 1<<n1 | r.read(uint(n1))
}

func varbitsLen(u uint64) uint {
	n := uint(bits.Len64(u))
	if n <= 1 {
		return 2
	}
	return egBits(uint64(n-1), 0) + n - 1
}

// Golomb-Rice code of order k with an escape: q = u>>k is sent in unary
// (q zeros, then a one) and the low k bits follow. For the well-behaved
// residuals of a smooth track it is up to a bit per value shorter than
// Exp-Golomb; a q of riceEscape or more is sent as riceEscape zeros, a one,
// then u as varbits, so an outlier costs at most about 100 bits.
const riceEscape = 24

func riceBits(u uint64, k uint) uint {
	q := u >> k
	if q >= riceEscape {
		return riceEscape + 1 + varbitsLen(u)
	}
	return uint(q) + 1 + k
}

func (w *bitWriter) writeRice(u uint64, k uint) {
	q := u >> k
	if q >= riceEscape {
		w.zeros(riceEscape)
		w.write(1, 1)
		w.writeVarbits(u)
		return
	}
	w.zeros(uint(q))
	w.write(1, 1)
	if k > 0 {
		w.write(u, k)
	}
}

func (r *bitReader) readRice(k uint) uint64 {
	q := r.countZeros(riceEscape)
	if q == riceEscape {
		return r.readVarbits()
	}
	return uint64(q)<<k | r.read(k)
}
