package wire

import "math/bits"

// A column is the sequence of one field over the positions of a batch.
// Values travel as uint64 holding the field sign-extended, and all
// arithmetic wraps modulo 2^64, so any value survives whatever its sign or
// size. Each column is written in the cheapest of six shapes (3 bits):
//
//	shapeRef:    every value equals the column's reference  (nothing more)
//	shapeConst:  every value equals the first               (first)
//	shapeLinear: the values step by a constant              (first, step)
//	shapeDelta:  residual = value - previous value          (first, residuals)
//	shapeDoD:    residual = change of that delta            (first, residuals)
//	shapeRaw:    residual = value - reference               (first, residuals)
//	shapeTDoD:   residual = value - (previous value + the previous delta
//	             scaled to this fix's time step)             (first, residuals)
//
// shapeTDoD is delta of delta made aware of time: with fixes at irregular
// intervals (a tracker that reports on distance, a receiver that drops
// fixes, a tunnel) plain delta of delta predicts the previous step whatever
// the time since, while this one predicts the previous velocity. It is
// offered for lat, lon and alt, whose times the decoder already has.
//
// The first value is written relative to the reference (the batch base for
// time, seq and boot) as varbits. Residuals are divided by their greatest
// common divisor (a receiver that reports 1e-6 degrees, or whole metres of
// altitude, makes every delta a multiple of 10 or 100) and written as
// zigzag Exp-Golomb codes of the order k that costs least over the column.
const (
	shapeRef    = 0
	shapeConst  = 1
	shapeLinear = 2
	shapeDelta  = 3
	shapeDoD    = 4
	shapeRaw    = 5
	shapeTDoD   = 6
	numShapes   = 7
	shapeBits   = 3
)

// allShapes allows every shape; the size experiments restrict the set to
// measure what each one is worth.
const allShapes = 1<<numShapes - 1

// maxK bounds the Exp-Golomb order (6 bits on the wire).
const maxK = 63

// colScratch is the encoder's reusable working space.
type colScratch struct {
	res    []uint64 // residuals of the last plan, zigzagged and divided
	tmp    []uint64 // transformed column values (prediction residuals)
	noRice bool     // the size experiments turn the Rice code off
	noGCD  bool     // and the common divisor
	exact  bool     // version 2: code both candidate shapes to choose
	times  []uint64 // times of the fixes that have an altitude
	grid   []uint64 // a lat or lon column in the receiver's grid
	seq    []uint64 // the seq column less the records' indices
	steps  []step   // the steps between the batch's fixes (predict.go)
	// stepsOK: steps are those of the current batch's positions.
	stepsOK bool
	ctx     riceCtx

	// The residuals of the cheapest shape found by choose, so that write
	// need not compute them again; valid while cached is &vals[0].
	best        []uint64
	cached      *uint64
	cachedShape int
	cachedG     uint64
	cachedK     uint
	cachedRice  bool
}

// residuals fills dst with the residuals of vals for shape and returns
// them with their gcd (1 when all are zero).
func residuals(dst []uint64, vals, times []uint64, ref uint64, shape int) ([]uint64, uint64) {
	dst = dst[:0]
	var g, prevDelta uint64
	for i := 1; i < len(vals); i++ {
		var r uint64
		switch shape {
		case shapeRaw:
			r = vals[i] - ref
		case shapeDelta:
			r = vals[i] - vals[i-1]
		case shapeTDoD:
			r = vals[i] - tdodPredict(vals, times, i)
		default: // shapeDoD; the delta before the first is taken as zero
			d := vals[i] - vals[i-1]
			r = d - prevDelta
			prevDelta = d
		}
		dst = append(dst, r)
		if g != 1 { // once 1, it stays 1: skip the divisions
			g = gcd(g, absInt64(int64(r)))
		}
	}
	if g == 0 {
		g = 1
	}
	return dst, g
}

// absInt64 is |v| as uint64; MinInt64 maps to 1<<63.
func absInt64(v int64) uint64 {
	if v < 0 {
		return -uint64(v)
	}
	return uint64(v)
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// divide replaces each residual with zigzag(residual / g).
func divide(res []uint64, g uint64) {
	if g == 1 {
		for i, r := range res {
			res[i] = zigzag(int64(r))
		}
		return
	}
	for i, r := range res {
		v := int64(r)
		q := int64(absInt64(v) / g)
		if v < 0 {
			q = -q
		}
		res[i] = zigzag(q)
	}
}

// bestCode returns the code (Rice or Exp-Golomb) and order k with the
// least total cost for us. Both codes are at their best for k near the
// bit length of the mean, so only a window of orders around it is tried:
// the choice only decides the size, any order decodes.
func bestCode(us []uint64, allowRice bool) (rice bool, k uint, cost uint) {
	if len(us) == 0 {
		return false, 0, 0
	}
	var sum uint64
	for _, u := range us {
		if sum+u < sum { // overflow: huge values, the mean is at least this
			sum = ^uint64(0)
			break
		}
		sum += u
	}
	centre := uint(bits.Len64(sum / uint64(len(us))))
	lo := uint(0)
	if centre > 3 {
		lo = centre - 3
	}
	hi := min(centre+1, maxK)
	cost = impossible
	// Mostly zeros with a few outliers has a large mean but wants k = 0:
	// the smallest orders are always tried too.
	for kk := uint(0); kk <= hi; kk++ {
		if kk == 2 && lo > 2 {
			kk = lo
		}
		var c uint
		for _, u := range us {
			c += egBits(u, kk)
		}
		if c < cost {
			rice, k, cost = false, kk, c
		}
		if !allowRice {
			continue
		}
		c = 0
		for _, u := range us {
			c += riceBits(u, kk)
		}
		if c < cost {
			rice, k, cost = true, kk, c
		}
	}
	return rice, k, cost
}

const impossible = ^uint(0)

// plan returns the size in bits of vals written in shape (impossible when
// the shape cannot hold them), and for residual shapes leaves the coded
// residuals in s.res with their gcd and order.
func (s *colScratch) plan(vals, times []uint64, ref uint64, shape int) (cost uint, g uint64, k uint, rice bool) {
	first := varbitsLen(zigzag(int64(vals[0] - ref)))
	switch shape {
	case shapeRef:
		for _, v := range vals {
			if v != ref {
				return impossible, 0, 0, false
			}
		}
		return shapeBits, 0, 0, false
	case shapeConst:
		for _, v := range vals[1:] {
			if v != vals[0] {
				return impossible, 0, 0, false
			}
		}
		return shapeBits + first, 0, 0, false
	case shapeLinear:
		if len(vals) < 2 {
			return impossible, 0, 0, false
		}
		step := vals[1] - vals[0]
		for i := 2; i < len(vals); i++ {
			if vals[i]-vals[i-1] != step {
				return impossible, 0, 0, false
			}
		}
		return shapeBits + first + varbitsLen(zigzag(int64(step))), 0, 0, false
	case shapeDelta, shapeDoD, shapeRaw, shapeTDoD:
		if shape == shapeTDoD && len(times) != len(vals) {
			return impossible, 0, 0, false
		}
		s.res, g = residuals(s.res, vals, times, ref, shape)
		if s.noGCD {
			g = 1
		}
		divide(s.res, g)
		rice, k, c := bestCode(s.res, !s.noRice)
		return shapeBits + first + egBits(g-1, 0) + 7 + c, g, k, rice
	}
	return impossible, 0, 0, false
}

// choose returns the cheapest shape among allowed for vals and its cost.
func (s *colScratch) choose(vals, times []uint64, ref uint64, allowed uint8) (shape int, cost uint) {
	if len(vals) == 0 {
		return shapeRef, 0
	}
	shape, cost = shapeDelta, impossible
	s.cached = nil
	for sh := shapeRef; sh <= shapeLinear; sh++ {
		if allowed&(1<<sh) == 0 {
			continue
		}
		if c, _, _, _ := s.plan(vals, times, ref, sh); c < cost {
			shape, cost = sh, c
			if sh != shapeLinear {
				return shape, cost // nothing is shorter than a constant
			}
		}
	}
	// Rank the residual shapes by the bit lengths of their residuals, a
	// close proxy of their coded size, and code only the most promising
	// two: finding the best code order is most of the encoder's work.
	var cand [2]int
	var est [2]uint
	est[0], est[1] = impossible, impossible
	for sh := shapeDelta; sh < numShapes; sh++ {
		if allowed&(1<<sh) == 0 || (sh == shapeTDoD && len(times) != len(vals)) {
			continue
		}
		s.res, _ = residuals(s.res, vals, times, ref, sh)
		var e uint
		for _, r := range s.res {
			e += uint(bits.Len64(absInt64(int64(r))))
		}
		switch {
		case e < est[0]:
			cand[1], est[1] = cand[0], est[0]
			cand[0], est[0] = sh, e
		case e < est[1]:
			cand[1], est[1] = sh, e
		}
	}
	for i, sh := range cand {
		if est[i] == impossible {
			continue
		}
		c, g, k, rice := s.plan(vals, times, ref, sh)
		if c < cost {
			shape, cost = sh, c
			// Keep the residuals of the best so far for write.
			s.res, s.best = s.best, s.res
			s.cached, s.cachedShape, s.cachedG, s.cachedK, s.cachedRice = &vals[0], sh, g, k, rice
		}
	}
	return shape, cost
}

// write writes vals in shape (which must be possible for them; residual
// shapes always are). An empty column is written as nothing at all: the
// decoder knows its length from the flags.
func (s *colScratch) write(w *bitWriter, vals, times []uint64, ref uint64, shape int) {
	if len(vals) == 0 {
		return
	}
	w.write(uint64(shape), shapeBits)
	if shape == shapeRef {
		return
	}
	w.writeVarbits(zigzag(int64(vals[0] - ref)))
	switch shape {
	case shapeConst:
	case shapeLinear:
		w.writeVarbits(zigzag(int64(vals[1] - vals[0])))
	default:
		var g uint64
		var k uint
		var rice bool
		res := s.res
		if s.cached == &vals[0] && s.cachedShape == shape {
			g, k, rice, res = s.cachedG, s.cachedK, s.cachedRice, s.best
		} else {
			_, g, k, rice = s.plan(vals, times, ref, shape)
		}
		w.writeEG(g-1, 0)
		if rice {
			w.write(1, 1)
			w.write(uint64(k), 6)
			for _, u := range res {
				w.writeRice(u, k)
			}
		} else {
			w.write(0, 1)
			w.write(uint64(k), 6)
			for _, u := range res {
				w.writeEG(u, k)
			}
		}
	}
}

// decodeColumn reads len(dst) values written by write into dst. Errors
// (a truncated stream, an unknown shape) set r.bad.
func decodeColumn(r *bitReader, dst, times []uint64, ref uint64) {
	n := len(dst)
	if n == 0 {
		return
	}
	shape := int(r.read(shapeBits))
	if shape == shapeRef {
		for i := range dst {
			dst[i] = ref
		}
		return
	}
	first := ref + uint64(unzigzag(r.readVarbits()))
	dst[0] = first
	switch shape {
	case shapeConst:
		for i := 1; i < n; i++ {
			dst[i] = first
		}
	case shapeLinear:
		step := uint64(unzigzag(r.readVarbits()))
		for i := 1; i < n; i++ {
			dst[i] = dst[i-1] + step
		}
	case shapeDelta, shapeDoD, shapeRaw, shapeTDoD:
		if shape == shapeTDoD && len(times) != n {
			r.bad = true
			clear(dst)
			return
		}
		g := r.readEG(0) + 1
		rice := r.read(1) == 1
		k := uint(r.read(6))
		var delta uint64
		for i := 1; i < n; i++ {
			if r.bad {
				// Garbage: stop rather than spin over a truncated stream.
				clear(dst[i:])
				return
			}
			var u uint64
			if rice {
				u = r.readRice(k)
			} else {
				u = r.readEG(k)
			}
			q := uint64(unzigzag(u)) * g
			switch shape {
			case shapeRaw:
				dst[i] = ref + q
			case shapeDelta:
				dst[i] = dst[i-1] + q
			case shapeTDoD:
				dst[i] = tdodPredict(dst, times, i) + q
			default:
				delta += q
				dst[i] = dst[i-1] + delta
			}
		}
	default:
		r.bad = true
		clear(dst)
	}
}

// tdodPredict predicts vals[i] (i >= 1) from the two values before it and
// the times of all three, in integers so both ends agree exactly.
func tdodPredict(vals, times []uint64, i int) uint64 {
	if i < 2 {
		return vals[i-1]
	}
	d := int64(vals[i-1] - vals[i-2])
	dtPrev := int64(times[i-1] - times[i-2])
	dt := int64(times[i] - times[i-1])
	if dtPrev <= 0 || dt < 0 {
		return vals[i-1] + uint64(d) // no usable time step: plain delta of delta
	}
	// round(|d| * dt / dtPrev), in 128 bits.
	hi, lo := bits.Mul64(absInt64(d), uint64(dt))
	if hi >= uint64(dtPrev) {
		return vals[i-1] + uint64(d) // would overflow: plain delta of delta
	}
	q, rem := bits.Div64(hi, lo, uint64(dtPrev))
	if rem >= uint64(dtPrev)-rem {
		q++
	}
	if d < 0 {
		q = -q
	}
	return vals[i-1] + q
}
