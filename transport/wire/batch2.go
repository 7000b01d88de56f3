package wire

import (
	"fmt"
	"math/bits"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// Versions 2 and 3 of a batch are one msgp array of 2 elements, or 3
// when the batch holds records other than positions:
//
//	[2, stream]  or  [2, stream, others]
//
// and version 3 writes a batch of positions only as the bare stream (a
// msgp bin), and a linear time column's step in whole seconds when it is.
//
// stream is a msgp bin holding one range-coded stream (rangecoder.go):
// the header (count, boot0, seq0, time0) and then the position columns of
// version 1 (column.go), with three changes: latitude and longitude may
// travel in the receiver's grid (grid.go), residuals are coded in
// adaptive Rice codes only, and every other bit is a bypass bit. others is
// version 1's list of [index, kind, dboot, dseq, dtime, priority, body],
// relative to the header. The device is not in the payload: the topic
// says it. docs/wire.md specifies all of it.

// AppendBatch appends the encoding of recs (version 3, Version), which all
// belong to device, to dst. Records may be of any kind and in any order; decoding
// gives them back in the same order. The device is checked but not
// written: the topic carries it. A position's optional fields whose Has*
// flag is clear are not carried and decode as zero. Once the Encoder has
// seen a batch of this size and dst has capacity, it allocates nothing.
func (e *Encoder) AppendBatch(dst []byte, device string, recs []kestrel.Record) ([]byte, error) {
	return e.appendBatch(dst, device, recs, Version)
}

// AppendBatchV2 appends the version 2 encoding of recs: version 3 less
// its two savings (docs/wire.md, "Why version 3"), for the golden vectors
// and the tests that versions 2 and 3 decode alike.
func (e *Encoder) AppendBatchV2(dst []byte, device string, recs []kestrel.Record) ([]byte, error) {
	return e.appendBatch(dst, device, recs, version2)
}

func (e *Encoder) appendBatch(dst []byte, device string, recs []kestrel.Record, version uint64) ([]byte, error) {
	nOthers, err := e.collect(device, recs)
	if err != nil {
		return dst, err
	}
	var base kestrel.Envelope
	var sec0 int64
	if len(recs) > 0 {
		base = recs[0].Envelope
		sec0 = floorSec(base.Time)
		base.Time = sec0 * 1000 // wraps for absurd times, as the decoder's does
	}
	rc := &e.rc
	rc.reset()
	writeHeader(rc, uint64(len(recs)), base.Boot, base.Seq, sec0)
	e.positionStream(&base, version)
	stream := rc.finish()

	if version >= Version && nOthers == 0 && !e.noBare {
		// Version 3: a batch of positions only is the bare stream.
		return msgp.AppendBytes(dst, stream), nil
	}
	fields := uint32(2)
	if nOthers > 0 {
		fields = 3
	}
	dst = msgp.AppendArrayHeader(dst, fields)
	dst = msgp.AppendUint(dst, uint(version))
	dst = msgp.AppendBytes(dst, stream)
	if nOthers > 0 {
		if dst, err = appendOthers(dst, recs, nOthers, &base); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// collect fills the position columns from recs and counts the others.
func (e *Encoder) collect(device string, recs []kestrel.Record) (nOthers int, err error) {
	if len(recs) > MaxRecords {
		return 0, fmt.Errorf("encode batch: %d records, more than %d", len(recs), MaxRecords)
	}
	for c := range e.cols {
		e.cols[c] = e.cols[c][:0]
	}
	e.posIdx = e.posIdx[:0]
	for i := range recs {
		r := &recs[i]
		if r.Device != "" && r.Device != device {
			return 0, fmt.Errorf("encode batch: record %d is from device %q, batch is %q", i, r.Device, device)
		}
		p, ok := r.Body.(*kestrel.Position)
		if !ok {
			if _, err := bodyKind(r.Body); err != nil {
				return 0, fmt.Errorf("encode batch: record %d: %w", i, err)
			}
			nOthers++
			continue
		}
		if p == nil {
			return 0, fmt.Errorf("encode batch: record %d: nil position", i)
		}
		e.addPosition(r, p)
		e.posIdx = append(e.posIdx, uint64(i))
	}
	return nOthers, nil
}

func appendOthers(dst []byte, recs []kestrel.Record, nOthers int, base *kestrel.Envelope) ([]byte, error) {
	dst = msgp.AppendArrayHeader(dst, uint32(nOthers))
	for i := range recs {
		r := &recs[i]
		if _, ok := r.Body.(*kestrel.Position); ok {
			continue
		}
		dst = msgp.AppendArrayHeader(dst, 7)
		dst = msgp.AppendUint32(dst, uint32(i))
		dst = msgp.AppendUint8(dst, uint8(r.Body.Kind()))
		dst = msgp.AppendInt64(dst, int64(r.Boot)-int64(base.Boot))
		dst = msgp.AppendInt64(dst, int64(r.Seq-base.Seq))
		dst = msgp.AppendInt64(dst, r.Time-base.Time)
		dst = msgp.AppendUint8(dst, uint8(r.Priority))
		var err error
		if dst, err = appendBody(dst, r.Body); err != nil {
			return dst, fmt.Errorf("encode batch: record %d: %w", i, err)
		}
	}
	return dst, nil
}

// positionStream writes the position columns of version 2 or 3.
func (e *Encoder) positionStream(base *kestrel.Envelope, version uint64) {
	shapes := e.shapes
	if shapes == 0 {
		shapes = allShapes
	}
	rc := &e.rc
	s := &e.scratch
	s.stepsOK = false
	for c := 0; c < numCols; c++ {
		vals, ref := e.cols[c], colRef2(c, base)
		if len(vals) == 0 {
			continue
		}
		var times []uint64
		switch c {
		case colSeq:
			// seq less the record's index in the batch: all seq0 when
			// the batch's sequence numbers are consecutive.
			s.seq = s.seq[:0]
			for i, v := range vals {
				s.seq = append(s.seq, v-e.posIdx[i])
			}
			vals = s.seq
		case colLat, colLon:
			times = e.cols[colTime]
			grid := gridNone
			if !e.noGrid {
				s.grid, grid = chooseGrid(s.grid, vals)
				// A column of 1e-6 degrees can fit a grid by chance and
				// lose its common divisor: take the grid only if cheaper.
				if grid != gridNone {
					_, cg := s.choose2(s.grid, times, ref, shapes)
					if _, c := s.choose2(vals, times, ref, shapes); c <= cg {
						grid = gridNone
					}
				}
			}
			rc.bypass(uint64(grid), 3)
			if grid != gridNone {
				vals = s.grid
			}
		case colAlt:
			s.times = gatedTimes(s.times, e.cols[colFlags], e.cols[colTime], uint64(kestrel.HasAlt))
			times = s.times
		}
		shape, cost := s.choose2(vals, times, ref, shapes)
		if c == colSpeed || c == colTrack {
			usePred := false
			if !e.noPredict {
				var ok bool
				if !s.stepsOK {
					s.steps, s.stepsOK = stepsOf(s.steps, e.cols[colLat], e.cols[colLon]), true
				}
				s.tmp, ok = predictColumn(s.tmp, c, vals, e.cols[colFlags], uint64(colFlag[c]), s.steps, e.cols[colTime])
				if ok {
					if pshape, pcost := s.choose2(s.tmp, nil, 0, shapes); pcost < cost {
						usePred, shape, vals, ref = true, pshape, s.tmp, 0
					}
				}
			}
			var bit uint64
			if usePred {
				bit = 1
			}
			rc.bypass(bit, 1)
		}
		var before uint
		if e.colBits != nil {
			before = rc.approxBits()
		}
		s.write2(rc, vals, times, ref, shape, c == colLat || c == colLon, c == colTime && version >= Version && !e.noSec)
		if e.colBits != nil {
			e.colBits[c] += int(rc.approxBits() - before)
		}
	}
}

// approxBits is about how many bits the stream holds so far (for the size
// experiments' per-column accounting).
func (e *rcEncoder) approxBits() uint {
	return uint(len(e.buf)+e.cacheSize)*8 + 32 - uint(bits.Len32(e.rng))
}

// choose2 is choose for version 2: the cost, in 1/8 bits, of residual
// shapes is that of the adaptive Rice code, and the best order k is found
// by trying the orders around the mean's bit length.
func (s *colScratch) choose2(vals, times []uint64, ref uint64, allowed uint8) (shape int, cost uint) {
	if len(vals) == 0 {
		return shapeRef, 0
	}
	shape, cost = shapeDelta, impossible
	s.cached = nil
	for sh := shapeRef; sh <= shapeLinear; sh++ {
		if allowed&(1<<sh) == 0 {
			continue
		}
		if c, _, _, _ := s.plan(vals, times, ref, sh); c != impossible && 8*c < cost {
			shape, cost = sh, 8*c
			if sh != shapeLinear {
				return shape, cost
			}
		}
	}
	// A long column (a backlog's batch) is ranked on its first sampleLen
	// values: the choice only affects the size.
	pv, pt := vals, times
	if len(vals) > sampleLen {
		pv = vals[:sampleLen]
		if len(times) == len(vals) {
			pt = times[:sampleLen]
		}
	}
	var cand [2]int
	var est [2]uint
	est[0], est[1] = impossible, impossible
	for sh := shapeDelta; sh < numShapes; sh++ {
		if allowed&(1<<sh) == 0 || (sh == shapeTDoD && len(times) != len(vals)) {
			continue
		}
		s.res, _ = residuals(s.res, pv, pt, ref, sh)
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
	// Of the two, code the one whose static code is shorter: simulating
	// the adaptive code is the encoder's main work.
	if est[1] != impossible && !s.exact {
		c0, _, _, _ := s.plan(pv, pt, ref, cand[0])
		c1, _, _, _ := s.plan(pv, pt, ref, cand[1])
		if c1 < c0 {
			cand[0] = cand[1]
		}
		est[1] = impossible
	}
	for i, sh := range cand {
		if est[i] == impossible {
			continue
		}
		var g uint64
		s.res, g = residuals(s.res, vals, times, ref, sh)
		if s.noGCD {
			g = 1
		}
		divide(s.res, g)
		k, rice, c := s.bestCode2(s.res)
		c += 8 * (shapeBits + varbitsLen(zigzag(int64(vals[0]-ref))) + divisorBits(g) + 1 + egBits(uint64(k), 0))
		if c < cost {
			shape, cost = sh, c
			s.res, s.best = s.best, s.res
			s.cached, s.cachedShape, s.cachedG, s.cachedK, s.cachedRice = &vals[0], sh, g, k, rice
		}
	}
	return shape, cost
}

// sampleLen bounds the residuals the encoder simulates per choice.
const sampleLen = 128

// bestCode2 returns the code (adaptive Rice or Exp-Golomb) and order k
// that cost least for us, and that cost in 1/8 bits. Simulating the
// adaptive code is the encoder's main work, so it is done only for the
// orders that matter: for each code the order whose static code is
// shortest, the one below it (the adaptive unary part makes smaller
// orders pay) and 0 (mostly zeros). The choice only affects the size.
func (s *colScratch) bestCode2(all []uint64) (k uint, rice bool, cost uint) {
	if len(all) == 0 {
		return 0, true, 0
	}
	// A long column (a backlog's batch) is judged by its first sampleLen
	// residuals, and the cost scaled: the order only affects the size,
	// and draining must not wait on the encoder.
	us := all[:min(len(all), sampleLen)]
	defer func() { cost = cost * uint(len(all)) / uint(len(us)) }()
	var sum uint64
	for _, u := range us {
		if sum+u < sum {
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
	kr, ke := lo, lo
	cr, ce := impossible, impossible
	for kk := lo; kk <= hi; kk++ {
		var r, e uint
		for _, u := range us {
			r += riceBits(u, kk)
			e += egBits(u, kk)
		}
		if r < cr {
			kr, cr = kk, r
		}
		if e < ce {
			ke, ce = kk, e
		}
	}
	cost = impossible
	try := func(kk uint, isRice bool) {
		var c uint
		if isRice {
			c = riceCost(us, kk, &s.ctx)
		} else {
			c = egaCost(us, kk, &s.ctx)
		}
		if c < cost {
			k, rice, cost = kk, isRice, c
		}
	}
	for _, kk := range [...]uint{0, kr - 1, kr} {
		if kk <= kr && !s.noRice { // kr-1 wraps when kr is 0
			try(kk, true)
		}
	}
	for _, kk := range [...]uint{0, ke - 1, ke} {
		if kk <= ke { // ke-1 wraps when ke is 0
			try(kk, false)
		}
	}
	return k, rice, cost
}

// write2 writes vals in shape through the range coder.
//
// secSteps (version 3, the time column): a linear shape's step says with
// one bit whether it is whole seconds, and then counts seconds.
func (s *colScratch) write2(rc *rcEncoder, vals, times []uint64, ref uint64, shape int, wide, secSteps bool) {
	if len(vals) == 0 {
		return
	}
	writeShape(rc, shape)
	if shape == shapeRef {
		return
	}
	writeFirst(rc, vals[0]-ref, wide)
	switch shape {
	case shapeConst:
	case shapeLinear:
		writeStep(rc, int64(vals[1]-vals[0]), secSteps)
	default:
		var g uint64
		var k uint
		var rice bool
		res := s.res
		if s.cached == &vals[0] && s.cachedShape == shape {
			g, k, rice, res = s.cachedG, s.cachedK, s.cachedRice, s.best
		} else {
			s.res, g = residuals(s.res, vals, times, ref, shape)
			divide(s.res, g)
			k, rice, _ = s.bestCode2(s.res)
			res = s.res
		}
		rc.writeDivisor(g)
		var code uint64
		if rice {
			code = 1
		}
		rc.bypass(code, 1)
		rc.writeEG0(uint64(k))
		s.ctx = riceCtx{}
		for _, u := range res {
			if rice {
				rc.writeRice(&s.ctx, u, k)
			} else {
				rc.writeEGA(&s.ctx, u, k)
			}
		}
	}
}

// writeStep writes a linear column's step; with secSteps (version 3's
// time column) a 1 bit and the step in seconds when it is whole seconds,
// else a 0 bit and the step.
func writeStep(rc *rcEncoder, step int64, secSteps bool) {
	if secSteps {
		if step%1000 == 0 {
			rc.bypass(1, 1)
			rc.writeVarbits(zigzag(step / 1000))
			return
		}
		rc.bypass(0, 1)
	}
	rc.writeVarbits(zigzag(step))
}

func readStep(d *rcDecoder, secSteps bool) uint64 {
	if secSteps && d.bypass(1) == 1 {
		return uint64(unzigzag(d.readVarbits())) * 1000
	}
	return uint64(unzigzag(d.readVarbits()))
}

// writeHeader writes the stream's header: count, boot0, seq0, sec0.
func writeHeader(rc *rcEncoder, count uint64, boot uint32, seq uint64, sec0 int64) {
	rc.writeVarbits(count)
	rc.writeVarbits(uint64(boot))
	rc.writeVarbits(seq)
	writeSec0(rc, sec0)
}

// writeSec0 writes the header's time: a 0 bit and 32 bits for the
// seconds of 1970 to 2106, else a 1 bit and varbits(zigzag(sec0)).
func writeSec0(rc *rcEncoder, sec0 int64) {
	if sec0 >= 0 && sec0 < 1<<32 {
		rc.bypass(0, 1)
		rc.bypass(uint64(sec0), 32)
		return
	}
	rc.bypass(1, 1)
	rc.writeVarbits(zigzag(sec0))
}

func readSec0(d *rcDecoder) int64 {
	if d.bypass(1) == 0 {
		return int64(d.bypass(32))
	}
	return unzigzag(d.readVarbits())
}

// writeShape writes a column's shape: a 0 bit for shapeRef, which most
// columns of a message take (mode, seq, boot, priority, coarsened), else a
// 1 bit and the shape in 3 bits.
func writeShape(rc *rcEncoder, shape int) {
	if shape == shapeRef {
		rc.bypass(0, 1)
		return
	}
	rc.bypass(1, 1)
	rc.bypass(uint64(shape), shapeBits)
}

func readShape(d *rcDecoder) int {
	if d.bypass(1) == 0 {
		return shapeRef
	}
	return int(d.bypass(shapeBits))
}

// writeFirst writes a column's first value less its reference: varbits of
// its zigzag, or for lat and lon (wide) its 32 low bits, two's complement:
// an angle of 30 bits costs 38 bits of varbits, and every message carries
// one of each.
func writeFirst(rc *rcEncoder, v uint64, wide bool) {
	if wide {
		rc.bypass(v&0xFFFFFFFF, 32)
		return
	}
	rc.writeVarbits(zigzag(int64(v)))
}

func readFirst(d *rcDecoder, wide bool) uint64 {
	if wide {
		return uint64(int64(int32(uint32(d.bypass(32)))))
	}
	return uint64(unzigzag(d.readVarbits()))
}

// decodeColumn2 reads len(dst) values written by write2 into dst.
func decodeColumn2(d *rcDecoder, dst, times []uint64, ref uint64, wide, secSteps bool) {
	n := len(dst)
	if n == 0 {
		return
	}
	shape := readShape(d)
	if shape == shapeRef {
		for i := range dst {
			dst[i] = ref
		}
		return
	}
	dst[0] = ref + readFirst(d, wide)
	switch shape {
	case shapeConst:
		for i := 1; i < n; i++ {
			dst[i] = dst[0]
		}
	case shapeLinear:
		step := readStep(d, secSteps)
		for i := 1; i < n; i++ {
			dst[i] = dst[i-1] + step
		}
	case shapeDelta, shapeDoD, shapeRaw, shapeTDoD:
		if shape == shapeTDoD && len(times) != n {
			d.bad = true
			clear(dst)
			return
		}
		g := d.readDivisor()
		rice := d.bypass(1) == 1
		k := uint(d.readEG0())
		if k > maxK {
			d.bad = true
			clear(dst)
			return
		}
		var ctx riceCtx
		var delta uint64
		for i := 1; i < n; i++ {
			if d.bad {
				clear(dst[i:])
				return
			}
			var u uint64
			if rice {
				u = d.readRice(&ctx, k)
			} else {
				u = d.readEGA(&ctx, k)
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
		d.bad = true
		clear(dst)
	}
}

// decodeBatch2 decodes the elements of a version 2 or 3 batch after the
// version; n is the array's length (2 for version 3's bare stream).
func decodeBatch2(b []byte, n uint32, version uint64) (recs []kestrel.Record, rest []byte, err error) {
	fail := func(what string, e error) ([]kestrel.Record, []byte, error) {
		return nil, nil, fmt.Errorf("%w: batch %s: %w", ErrFormat, what, e)
	}
	if n < 2 {
		return fail("fields", fmt.Errorf("%d elements, want at least 2", n))
	}
	stream, b, err := msgp.ReadBytesZC(b)
	if err != nil {
		return fail("stream", err)
	}
	var d rcDecoder
	d.init(stream)
	count := d.readVarbits()
	var base kestrel.Envelope
	base.Boot = uint32(d.readVarbits())
	base.Seq = d.readVarbits()
	base.Time = readSec0(&d) * 1000
	if d.bad {
		return fail("header", fmt.Errorf("bad code"))
	}
	if count > MaxRecords {
		return fail("count", fmt.Errorf("%d records, more than %d", count, MaxRecords))
	}
	recs = make([]kestrel.Record, count)
	isOther := make([]bool, count)
	if n >= 3 {
		nOthers, rest, err := msgp.ReadArrayHeaderBytes(b)
		if err != nil {
			return fail("others", err)
		}
		if uint64(nOthers) > count {
			return fail("others", fmt.Errorf("%d other records in a batch of %d", nOthers, count))
		}
		b = rest
		next := 0
		for i := uint32(0); i < nOthers; i++ {
			var idx int
			var r kestrel.Record
			if idx, r, b, err = decodeOther(b, &base); err != nil {
				return fail(fmt.Sprintf("record %d", i), err)
			}
			if idx < next || idx >= int(count) {
				return fail(fmt.Sprintf("record %d", i), fmt.Errorf("index %d out of order or range", idx))
			}
			next = idx + 1
			recs[idx] = r
			isOther[idx] = true
		}
		for i := uint32(3); i < n; i++ {
			if b, err = msgp.Skip(b); err != nil {
				return fail("trailing field", err)
			}
		}
	}
	nPos := 0
	for _, o := range isOther {
		if !o {
			nPos++
		}
	}
	pos := make([]kestrel.Position, nPos)
	if err := decodePositions2(&d, pos, recs, isOther, &base, version); err != nil {
		return fail("positions", err)
	}
	return recs, b, nil
}

func decodePositions2(d *rcDecoder, pos []kestrel.Position, recs []kestrel.Record, isOther []bool, base *kestrel.Envelope, version uint64) error {
	n := len(pos)
	if n == 0 {
		return nil
	}
	vals := make([]uint64, n)
	flags := make([]uint64, n)
	decodeColumn2(d, flags, nil, colRef2(colFlags, base), false, false)
	for i := range pos {
		pos[i].Flags = kestrel.PosFlags(flags[i])
	}
	j := 0
	for i := range recs {
		if isOther[i] {
			continue
		}
		recs[i].Body = &pos[j]
		j++
	}
	var lat, lon, tm []uint64
	var steps []step
	for c := colTime; c < numCols; c++ {
		if d.bad {
			return fmt.Errorf("bad code before column %d", c)
		}
		m, col := columnRows(c, pos, n, vals)
		grid := gridNone
		if c == colLat || c == colLon {
			grid = int(d.bypass(3))
			if grid > 1+maxGridK {
				return fmt.Errorf("column %d: unknown grid %d", c, grid)
			}
		}
		predicted := false
		if (c == colSpeed || c == colTrack) && m > 0 {
			predicted = d.bypass(1) == 1
		}
		var times []uint64
		switch c {
		case colLat, colLon:
			times = tm
		case colAlt:
			times = gatedTimes(nil, flags, tm, uint64(kestrel.HasAlt))
		}
		decodeColumn2(d, col, times, colRef2(c, base), c == colLat || c == colLon, c == colTime && version >= Version)
		if c == colSeq {
			j := 0
			for i := range recs {
				if !isOther[i] {
					col[j] += uint64(i)
					j++
				}
			}
		}
		if grid != gridNone {
			for i, g := range col {
				col[i] = uint64(fromGrid(int64(g), grid-1))
			}
		}
		switch c {
		case colTime:
			tm = col
		case colLat:
			lat = col
		case colLon:
			lon = col
		}
		if predicted {
			if steps == nil {
				steps = stepsOf(nil, lat, lon)
			}
			unpredictColumn(col, c, flags, uint64(colFlag[c]), steps, tm)
		}
		setColumn(c, col, pos, recs, isOther)
	}
	if d.bad {
		return fmt.Errorf("bad code")
	}
	return nil
}

// The common divisor g of a column's residuals is written as g = m*10^e,
// e as large as divides g: EG0(e), then EG0(m-1). Receivers round to
// decimal units (whole seconds, metres, 1e-6 degrees), so g is most often
// 1, 10, 100 or 1000: 1, 4, 4 and 6 bits, where EG0(g-1) took 1, 7, 13
// and 19.
func splitDivisor(g uint64) (m, e uint64) {
	for g%10 == 0 {
		g /= 10
		e++
	}
	return g, e
}

func divisorBits(g uint64) uint {
	m, e := splitDivisor(g)
	return egBits(e, 0) + egBits(m-1, 0)
}

func (e *rcEncoder) writeDivisor(g uint64) {
	m, x := splitDivisor(g)
	e.writeEG0(x)
	e.writeEG0(m - 1)
}

// readDivisor reads a divisor; a power of ten beyond 10^19 is not a
// uint64 and marks the stream bad.
func (d *rcDecoder) readDivisor() uint64 {
	x := d.readEG0()
	m := d.readEG0() + 1
	if x > 19 {
		d.bad = true
		return 1
	}
	for ; x > 0; x-- {
		m *= 10 // wraps for values no encoder writes
	}
	return m
}

// flagsRef2 is what the GPS driver sets for a fix from RMC and GGA.
const flagsRef2 = kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP

// colRef2 is colRef for version 2, where flags default to flagsRef2, and
// the seq column
// holds seq less the record's index in the batch.
func colRef2(c int, base *kestrel.Envelope) uint64 {
	if c == colFlags {
		return uint64(flagsRef2)
	}
	return colRef(c, base)
}
