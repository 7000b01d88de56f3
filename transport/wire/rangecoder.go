package wire

import "math/bits"

// The entropy coder of version 2: a binary range coder (the carry-less
// form of LZMA's, 32-bit range, 12-bit probabilities) with adaptive
// probabilities for the unary part of the residual codes and plain
// "bypass" bits, exactly one bit each, for everything else. docs/wire.md
// specifies it step by step; the Python reference decoder follows that.
//
// Probabilities adapt by counting (the Krichevsky-Trofimov estimator):
// a context that has seen n0 zeros and n1 ones codes the next bit with
// P(0) = (2*n0+1) / (2*(n0+n1)+2), in 1/4096ths and clamped to
// [1, 4095]. A batch holds 1 to a few hundred values per column, too few
// for the shift-based update of LZMA to settle; counting is the best
// estimate for so short a sequence.

const (
	probBits  = 12
	probOne   = 1 << probBits
	rcTop     = 1 << 24
	ctxPrefix = riceEscape + 1 // contexts of one column's unary codes
	ctxMax    = 255            // counts halve when one reaches this
)

// binCtx is one adaptive binary context.
type binCtx struct{ n0, n1 uint8 }

// p0 is the probability of a zero, in 1/4096ths.
func (c *binCtx) p0() uint32 {
	p := (uint32(2*uint32(c.n0)+1) << probBits) / (2*(uint32(c.n0)+uint32(c.n1)) + 2)
	return min(max(p, 1), probOne-1)
}

func (c *binCtx) update(bit uint32) {
	if bit == 0 {
		c.n0++
	} else {
		c.n1++
	}
	if c.n0 == ctxMax || c.n1 == ctxMax {
		c.n0 = (c.n0 + 1) >> 1
		c.n1 = (c.n1 + 1) >> 1
	}
}

// rcEncoder writes a range-coded stream into buf.
type rcEncoder struct {
	buf       []byte
	low       uint64 // 33 bits: bit 32 is a carry into the bytes not yet written
	rng       uint32
	cache     byte
	cacheSize int  // pending bytes: cache, then cacheSize-1 bytes of 0xFF
	first     bool // the first byte out is always 0 and is not stored
}

func (e *rcEncoder) reset() {
	e.buf = e.buf[:0]
	e.low, e.rng, e.cache, e.cacheSize, e.first = 0, 0xFFFFFFFF, 0, 1, true
}

func (e *rcEncoder) shiftLow() {
	if uint32(e.low) < 0xFF000000 || e.low >= 1<<32 {
		carry := byte(e.low >> 32)
		b := e.cache
		for {
			if e.first {
				e.first = false
			} else {
				e.buf = append(e.buf, b+carry)
			}
			b = 0xFF
			e.cacheSize--
			if e.cacheSize == 0 {
				break
			}
		}
		e.cache = byte(e.low >> 24)
	}
	e.cacheSize++
	e.low = (e.low & 0x00FFFFFF) << 8
}

// bit codes one bit in context c.
func (e *rcEncoder) bit(c *binCtx, bit uint32) {
	bound := (e.rng >> probBits) * c.p0()
	if bit == 0 {
		e.rng = bound
	} else {
		e.low += uint64(bound)
		e.rng -= bound
	}
	c.update(bit)
	for e.rng < rcTop {
		e.rng <<= 8
		e.shiftLow()
	}
}

// bypass writes the n low bits of v, most significant first, one bit each.
func (e *rcEncoder) bypass(v uint64, n uint) {
	for n > 0 {
		n--
		e.rng >>= 1
		if v>>n&1 != 0 {
			e.low += uint64(e.rng)
		}
		for e.rng < rcTop {
			e.rng <<= 8
			e.shiftLow()
		}
	}
}

// finish ends the stream with as few bytes as decode correctly: the
// decoder reads zeros past the end, so the encoder picks the value in
// [low, low+range) with the most trailing zero bits, writes it out and
// drops the trailing zero bytes.
func (e *rcEncoder) finish() []byte {
	for shift := uint(32); ; shift -= 8 {
		mask := uint64(1)<<shift - 1
		if v := (e.low + mask) &^ mask; v-e.low < uint64(e.rng) {
			e.low = v
			break
		}
	}
	for range 5 {
		e.shiftLow()
	}
	for len(e.buf) > 0 && e.buf[len(e.buf)-1] == 0 {
		e.buf = e.buf[:len(e.buf)-1]
	}
	return e.buf
}

// rcDecoder reads what rcEncoder wrote. Past the end it reads zeros (the
// encoder drops trailing zero bytes); the work any input can cause is
// bounded by the record count, not by the bytes. bad is set on a code no
// encoder writes.
type rcDecoder struct {
	b    []byte
	pos  int
	code uint32
	rng  uint32
	bad  bool
}

func (d *rcDecoder) init(b []byte) {
	*d = rcDecoder{b: b, rng: 0xFFFFFFFF}
	for range 4 {
		d.code = d.code<<8 | uint32(d.next())
	}
}

func (d *rcDecoder) next() byte {
	p := d.pos
	d.pos++
	if p < len(d.b) {
		return d.b[p]
	}
	return 0
}

func (d *rcDecoder) bit(c *binCtx) uint32 {
	bound := (d.rng >> probBits) * c.p0()
	var bit uint32
	if d.code < bound {
		d.rng = bound
	} else {
		d.code -= bound
		d.rng -= bound
		bit = 1
	}
	c.update(bit)
	for d.rng < rcTop {
		d.rng <<= 8
		d.code = d.code<<8 | uint32(d.next())
	}
	return bit
}

func (d *rcDecoder) bypass(n uint) uint64 {
	var v uint64
	for ; n > 0; n-- {
		d.rng >>= 1
		var bit uint64
		if d.code >= d.rng {
			d.code -= d.rng
			bit = 1
		}
		v = v<<1 | bit
		for d.rng < rcTop {
			d.rng <<= 8
			d.code = d.code<<8 | uint32(d.next())
		}
	}
	return v
}

// Version 2's integer codes on top of the coder. varbits and Exp-Golomb
// are those of version 1 (bits.go), written as bypass bits.

func (e *rcEncoder) writeEG0(u uint64) {
	m := u + 1
	n := uint(bits.Len64(m))
	if m == 0 { // u is all ones
		n = 65
	}
	e.bypass(0, n-1)
	e.bypass(1, 1)
	e.bypass(m, n-1)
}

func (d *rcDecoder) readEG0() uint64 {
	z := uint(0)
	for d.bypass(1) == 0 {
		z++
		if z > 64 || d.bad {
			d.bad = true
			return 0
		}
	}
	low := d.bypass(z)
	if z == 64 {
		return low - 1
	}
	return (1<<z | low) - 1
}

func (e *rcEncoder) writeVarbits(u uint64) {
	n := uint(bits.Len64(u))
	if n <= 1 {
		e.writeEG0(0)
		e.bypass(u, 1)
		return
	}
	e.writeEG0(uint64(n - 1))
	e.bypass(u, n-1)
}

func (d *rcDecoder) readVarbits() uint64 {
	n1 := d.readEG0()
	if n1 == 0 {
		return d.bypass(1)
	}
	if n1 > 63 {
		d.bad = true
		return 0
	}
	return 1<<n1 | d.bypass(uint(n1))
}

// riceCtx is the adaptive state of one column's residual code: a set of
// unary contexts per bucket of the previous residual's quotient (0, 1, 2
// or more), so a run of small residuals and a burst of large ones each
// learn their own odds.
type riceCtx struct {
	set  [riceSets][ctxPrefix]binCtx
	prev uint64 // the previous quotient's bucket
}

const riceSets = 4

func riceBucket(q uint64) uint64 { return min(q, uint64(riceSets-1)) }

// writeRice codes u as adaptive Rice of order k: q = u>>k as q ones, the
// j-th in context j of the set the previous quotient selects, then a zero
// in context q, then the k low bits bypassed. From q = riceEscape on, the
// riceEscape ones are followed by varbits(u) instead (no zero, no low bits).
func (e *rcEncoder) writeRice(rc *riceCtx, u uint64, k uint) {
	ctx := &rc.set[rc.prev]
	q := u >> k
	rc.prev = riceBucket(q)
	for j := uint64(0); j < min(q, riceEscape); j++ {
		e.bit(&ctx[j], 1)
	}
	if q >= riceEscape {
		e.writeVarbits(u)
		return
	}
	e.bit(&ctx[q], 0)
	e.bypass(u, k)
}

func (d *rcDecoder) readRice(rc *riceCtx, k uint) uint64 {
	ctx := &rc.set[rc.prev]
	q := uint64(0)
	for q < riceEscape && d.bit(&ctx[q]) == 1 {
		q++
	}
	rc.prev = riceBucket(q)
	if q == riceEscape {
		return d.readVarbits()
	}
	return q<<k | d.bypass(k)
}

// writeEGA codes u as adaptive Exp-Golomb of order k: with m = (u>>k)+1
// of n bits, n-1 ones, the j-th in context min(j, riceEscape) of the set
// the previous class selects, then a zero in context min(n-1, riceEscape),
// then the n-1 bits of m below its leading one and the k low bits of u,
// bypassed. Its classes grow geometrically, so a rare outlier in a column
// of small residuals costs a few bits where Rice's unary code costs many.
func (e *rcEncoder) writeEGA(rc *riceCtx, u uint64, k uint) {
	ctx := &rc.set[rc.prev]
	q := u >> k
	m := q + 1
	n := uint(bits.Len64(m))
	if m == 0 {
		n = 65
	}
	rc.prev = riceBucket(uint64(n - 1))
	for j := uint(0); j < n-1; j++ {
		e.bit(&ctx[min(j, riceEscape)], 1)
	}
	e.bit(&ctx[min(n-1, riceEscape)], 0)
	e.bypass(m, n-1)
	e.bypass(u, k)
}

func (d *rcDecoder) readEGA(rc *riceCtx, k uint) uint64 {
	ctx := &rc.set[rc.prev]
	z := uint(0)
	for d.bit(&ctx[min(z, riceEscape)]) == 1 {
		z++
		if z > 64 {
			d.bad = true
			return 0
		}
	}
	rc.prev = riceBucket(uint64(z))
	low := d.bypass(z)
	var m uint64
	if z < 64 {
		m = 1<<z | low
	} else {
		m = low // the 65th bit falls off: q+1 wrapped
	}
	return (m-1)<<k | d.bypass(k)
}

// egaCost is riceCost for writeEGA.
func egaCost(us []uint64, k uint, rc *riceCtx) uint {
	*rc = riceCtx{}
	var c uint
	for _, u := range us {
		ctx := &rc.set[rc.prev]
		m := u>>k + 1
		n := uint(bits.Len64(m))
		if m == 0 {
			n = 65
		}
		rc.prev = riceBucket(uint64(n - 1))
		for j := uint(0); j < n-1; j++ {
			x := &ctx[min(j, riceEscape)]
			c += uint(bitCost8[probOne-x.p0()])
			x.update(1)
		}
		x := &ctx[min(n-1, riceEscape)]
		c += uint(bitCost8[x.p0()]) + 8*(n-1+k)
		x.update(0)
	}
	return c
}

// bitCost8 is -log2(p/4096) in 1/8 bits for p = 0..4096 (p = 0 unused),
// for the encoder's estimates of what a code will cost.
var bitCost8 = func() (t [probOne + 1]uint32) {
	for p := 1; p <= probOne; p++ {
		// log2 by integer steps: exact enough for choosing, and the
		// choice only affects the size.
		t[p] = uint32(log2Fixed(probOne)-log2Fixed(uint32(p))) >> 13
	}
	return t
}()

// log2Fixed is log2(x) in 1/65536 bits (x >= 1), computed with integer
// squaring so the table is the same on every CPU.
func log2Fixed(x uint32) uint64 {
	n := uint(bits.Len32(x)) - 1
	r := uint64(n) << 16
	// Fraction: normalise x to [1, 2) in Q31 and square repeatedly.
	m := uint64(x) << (31 - n)
	for i := 15; i >= 0; i-- {
		m = m * m >> 31
		if m >= 2<<31 {
			m >>= 1
			r |= 1 << uint(i)
		}
	}
	return r
}

// riceCost returns the cost in 1/8 bits of coding us in adaptive Rice of
// order k from fresh contexts, exactly as writeRice would (to within the
// table's rounding).
func riceCost(us []uint64, k uint, rc *riceCtx) uint {
	*rc = riceCtx{}
	var c uint
	for _, u := range us {
		q := u >> k
		ctx := &rc.set[rc.prev]
		rc.prev = riceBucket(q)
		for j := uint64(0); j < min(q, riceEscape); j++ {
			c += uint(bitCost8[probOne-ctx[j].p0()])
			ctx[j].update(1)
		}
		if q >= riceEscape {
			c += 8 * varbitsLen(u)
			continue
		}
		c += uint(bitCost8[ctx[q].p0()]) + 8*k
		ctx[q].update(0)
	}
	return c
}
