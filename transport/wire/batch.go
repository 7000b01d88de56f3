package wire

import (
	"fmt"
	"strings"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// A batch is one msgp array:
//
//	[version, device, count, boot0, seq0, sec0, positions, others]
//
// boot0 and seq0 are those of the first record, sec0 its time in whole
// seconds (5 bytes of msgpack where milliseconds would take 9); times are
// written relative to sec0*1000, boot and seq relative to boot0 and seq0. positions is a msgp bin holding
// the bit-packed columns of every position in the batch (see column.go);
// others is an array of [index, kind, dboot, dseq, dtime, priority, body]
// with index the record's place in the batch, so decoding restores the
// exact order: positions fill the places the others leave free.
const batchFields = 8

// Column order inside the positions bin. flags comes first because its
// Has* bits say which fixes carry alt, speed, track, sats, hdop, eph, epv.
const (
	colFlags = iota
	colTime
	colLat
	colLon
	colAlt
	colSpeed
	colTrack
	colMode
	colSeq
	colBoot
	colPriority
	colSats
	colHDOP
	colEPH
	colEPV
	colCoarsened
	numCols
)

// colFlag is the Has* flag that gates each optional column (0: always present).
// columnRows is how many rows column c has in a batch of n records whose
// positions are pos (a column with a presence flag has a row only where
// the flag is set), and the slice to decode it into: its own for time, lat
// and lon (the predictions of later columns read them), vals otherwise.
func columnRows(c int, pos []kestrel.Position, n int, vals []uint64) (int, []uint64) {
	m := n
	if f := colFlag[c]; f != 0 {
		m = 0
		for i := range pos {
			if pos[i].Flags&f != 0 {
				m++
			}
		}
	}
	switch c {
	case colTime, colLat, colLon:
		return m, make([]uint64, n)
	}
	return m, vals[:m]
}

var colFlag = [numCols]kestrel.PosFlags{
	colAlt: kestrel.HasAlt, colSpeed: kestrel.HasSpeed, colTrack: kestrel.HasTrack,
	colSats: kestrel.HasSats, colHDOP: kestrel.HasHDOP, colEPH: kestrel.HasEPH, colEPV: kestrel.HasEPV,
}

// Encoder encodes batches. It keeps its working space between calls, so
// AppendBatch allocates nothing once it has seen a batch of the size it
// is given and dst has capacity. An Encoder is not safe for concurrent use.
type Encoder struct {
	cols    [numCols][]uint64
	scratch colScratch
	bw      bitWriter // version 1's
	rc      rcEncoder // version 2's
	posIdx  []uint64  // each position's index in the batch
	// The size experiments (size_test.go) restrict these to measure
	// what each technique is worth; normal encoding leaves them zero.
	shapes    uint8         // shapes columns may use; 0 means all
	noPredict bool          // never predict speed and track
	noGrid    bool          // never code positions in the receiver's grid
	noBare    bool          // version 3 without its bare stream (array framing)
	noSec     bool          // version 3 without its whole-second time step (not decodable)
	colBits   *[numCols]int // when set, bits written per column are added here
}

// AppendBatchV1 appends the version 1 encoding of recs (docs/wire.md,
// "Version 1"), which carries the device in the payload. The agent sends
// version 2 (AppendBatch); this stays for tests of the decoders that must
// still read version 1 and for the size comparison.
func (e *Encoder) AppendBatchV1(dst []byte, device string, recs []kestrel.Record) ([]byte, error) {
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
	dst = msgp.AppendArrayHeader(dst, batchFields)
	dst = msgp.AppendUint(dst, version1)
	dst = msgp.AppendString(dst, device)
	dst = msgp.AppendUint32(dst, uint32(len(recs)))
	dst = msgp.AppendUint32(dst, base.Boot)
	dst = msgp.AppendUint64(dst, base.Seq)
	dst = msgp.AppendInt64(dst, sec0)
	dst = msgp.AppendBytes(dst, e.positionBits(&base))
	if dst, err = appendOthers(dst, recs, nOthers, &base); err != nil {
		return dst, err
	}
	return dst, nil
}

func (e *Encoder) addPosition(r *kestrel.Record, p *kestrel.Position) {
	c := &e.cols
	c[colFlags] = append(c[colFlags], uint64(p.Flags))
	c[colTime] = append(c[colTime], uint64(r.Time))
	c[colLat] = append(c[colLat], uint64(int64(p.Lat)))
	c[colLon] = append(c[colLon], uint64(int64(p.Lon)))
	c[colMode] = append(c[colMode], uint64(p.Mode))
	c[colSeq] = append(c[colSeq], r.Seq)
	c[colBoot] = append(c[colBoot], uint64(r.Boot))
	c[colPriority] = append(c[colPriority], uint64(r.Priority))
	c[colCoarsened] = append(c[colCoarsened], uint64(p.Coarsened))
	f := p.Flags
	if f&kestrel.HasAlt != 0 {
		c[colAlt] = append(c[colAlt], uint64(int64(p.Alt)))
	}
	if f&kestrel.HasSpeed != 0 {
		c[colSpeed] = append(c[colSpeed], uint64(int64(p.Speed)))
	}
	if f&kestrel.HasTrack != 0 {
		c[colTrack] = append(c[colTrack], uint64(p.Track))
	}
	if f&kestrel.HasSats != 0 {
		c[colSats] = append(c[colSats], uint64(p.Sats))
	}
	if f&kestrel.HasHDOP != 0 {
		c[colHDOP] = append(c[colHDOP], uint64(p.HDOP))
	}
	if f&kestrel.HasEPH != 0 {
		c[colEPH] = append(c[colEPH], uint64(p.EPH))
	}
	if f&kestrel.HasEPV != 0 {
		c[colEPV] = append(c[colEPV], uint64(p.EPV))
	}
}

// colRef is the reference a column's first value is written relative to:
// the batch base for time, seq and boot (so the first value costs a few
// bits), zero for the rest.
func colRef(c int, base *kestrel.Envelope) uint64 {
	switch c {
	case colTime:
		return uint64(base.Time)
	case colSeq:
		return base.Seq
	case colBoot:
		return uint64(base.Boot)
	case colPriority:
		return uint64(kestrel.PriorityNormal)
	case colMode:
		return uint64(kestrel.Fix3D)
	}
	return 0
}

func (e *Encoder) positionBits(base *kestrel.Envelope) []byte {
	shapes := e.shapes
	if shapes == 0 {
		shapes = allShapes
	}
	e.bw.buf = e.bw.buf[:0]
	e.bw.acc, e.bw.nacc = 0, 0
	s := &e.scratch
	s.stepsOK = false
	for c := 0; c < numCols; c++ {
		vals, ref := e.cols[c], colRef(c, base)
		if len(vals) == 0 {
			continue
		}
		var times []uint64
		switch c {
		case colLat, colLon:
			times = e.cols[colTime]
		case colAlt:
			s.times = gatedTimes(s.times, e.cols[colFlags], e.cols[colTime], uint64(kestrel.HasAlt))
			times = s.times
		}
		shape, cost := s.choose(vals, times, ref, shapes)
		if c == colSpeed || c == colTrack {
			// One bit says whether the column holds differences from the
			// prediction (predict.go) or the values themselves.
			usePred := false
			if !e.noPredict {
				var ok bool
				if !s.stepsOK {
					s.steps, s.stepsOK = stepsOf(s.steps, e.cols[colLat], e.cols[colLon]), true
				}
				s.tmp, ok = predictColumn(s.tmp, c, vals, e.cols[colFlags], uint64(colFlag[c]), s.steps, e.cols[colTime])
				if ok {
					if pshape, pcost := s.choose(s.tmp, nil, 0, shapes); pcost < cost {
						usePred, shape, vals, ref = true, pshape, s.tmp, 0
					}
				}
			}
			var bit uint64
			if usePred {
				bit = 1
			}
			e.bw.write(bit, 1)
		}
		before := len(e.bw.buf)*8 + int(e.bw.nacc)
		s.write(&e.bw, vals, times, ref, shape)
		if e.colBits != nil {
			e.colBits[c] += len(e.bw.buf)*8 + int(e.bw.nacc) - before
		}
	}
	return e.bw.flush()
}

// DecodeBatch decodes a batch of version 2 (AppendBatch) or version 1
// (AppendBatchV1). It never panics, and it bounds what it allocates by
// MaxRecords and the payload's length. A payload of another version fails
// with an error wrapping ErrVersion. A version 1 payload names its device,
// which is returned and set in every record; a version 2 payload does not
// (the topic does), so device is "" and the records' Device is empty: use
// DecodeBatchFor or DecodeBatchTopic to have it filled in.
func DecodeBatch(payload []byte) (device string, recs []kestrel.Record, err error) {
	device, recs, rest, err := decodeBatch(payload)
	if err != nil {
		return "", nil, err
	}
	if len(rest) != 0 {
		return "", nil, fmt.Errorf("%w: %d bytes after the batch", ErrFormat, len(rest))
	}
	return device, recs, nil
}

// DecodeBatchFor decodes a batch of either version that device sent (the
// device its topic names) and sets it in every record. A version 1
// payload that names another device fails.
func DecodeBatchFor(device string, payload []byte) ([]kestrel.Record, error) {
	dev, recs, err := DecodeBatch(payload)
	if err != nil {
		return nil, err
	}
	if dev != "" && dev != device {
		return nil, fmt.Errorf("%w: payload of device %q for device %q", ErrFormat, dev, device)
	}
	for i := range recs {
		recs[i].Device = device
	}
	return recs, nil
}

// DecodeBatchTopic decodes a batch that arrived on topic, a Kestrel topic
// "kestrel/v1/{fleet}/{device}/{channel}", taking the device from it. On
// any other topic it decodes as DecodeBatch does.
func DecodeBatchTopic(topic string, payload []byte) ([]kestrel.Record, error) {
	if _, device, _, ok := ParseTopic(topic); ok {
		return DecodeBatchFor(device, payload)
	}
	_, recs, err := DecodeBatch(payload)
	return recs, err
}

// ParseTopic splits a Kestrel topic "kestrel/v1/{fleet}/{device}/{channel...}";
// ok is false for any other topic.
func ParseTopic(topic string) (fleet, device, channel string, ok bool) {
	rest, found := strings.CutPrefix(topic, "kestrel/v1/")
	if !found {
		return "", "", "", false
	}
	fleet, rest, found = strings.Cut(rest, "/")
	if !found || fleet == "" {
		return "", "", "", false
	}
	device, channel, found = strings.Cut(rest, "/")
	if !found || device == "" || channel == "" {
		return "", "", "", false
	}
	return fleet, device, channel, true
}

// SplitBatch returns the first batch in b and what follows it, so that a
// stream of concatenated payloads can be decoded one at a time.
func SplitBatch(b []byte) (payload, rest []byte, err error) {
	rest, err = msgp.Skip(b)
	if err != nil {
		return nil, b, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return b[:len(b)-len(rest)], rest, nil
}

// readVersion reads the array header and the version of a payload and
// checks the version against those the caller reads.
func readVersion(b []byte, what string, known ...uint64) (n uint32, v uint64, rest []byte, err error) {
	n, b, err = msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: %s: not a msgpack array: %v", ErrFormat, what, err)
	}
	if n < 1 {
		return 0, 0, nil, fmt.Errorf("%w: %s: empty array", ErrFormat, what)
	}
	v, b, err = msgp.ReadUint64Bytes(b)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%w: %s: version: %v", ErrFormat, what, err)
	}
	for _, k := range known {
		if v == k {
			return n, v, b, nil
		}
	}
	return 0, 0, nil, fmt.Errorf("%w %d in %s (this decoder reads versions %v)", ErrVersion, v, what, known)
}

// decodeBatch decodes a batch of any version. device is the one a
// version 1 payload names, "" for versions 2 and 3.
func decodeBatch(b []byte) (device string, recs []kestrel.Record, rest []byte, err error) {
	if msgp.NextType(b) == msgp.BinType {
		// Version 3's bare stream: a batch of positions only.
		recs, rest, err = decodeBatch2(b, 2, Version)
		return "", recs, rest, err
	}
	n, v, b, err := readVersion(b, "batch", version1, version2, Version)
	if err != nil {
		return "", nil, nil, err
	}
	if v >= version2 {
		recs, rest, err = decodeBatch2(b, n, v)
		return "", recs, rest, err
	}
	if n < batchFields {
		return "", nil, nil, fmt.Errorf("%w: batch has %d fields, want %d", ErrFormat, n, batchFields)
	}
	fail := func(what string, e error) (string, []kestrel.Record, []byte, error) {
		return "", nil, nil, fmt.Errorf("%w: batch %s: %w", ErrFormat, what, e)
	}
	if device, b, err = msgp.ReadStringBytes(b); err != nil {
		return fail("device", err)
	}
	count, b, err := msgp.ReadUint32Bytes(b)
	if err != nil {
		return fail("count", err)
	}
	if count > MaxRecords {
		return fail("count", fmt.Errorf("%d records, more than %d", count, MaxRecords))
	}
	var base kestrel.Envelope
	if base.Boot, b, err = msgp.ReadUint32Bytes(b); err != nil {
		return fail("boot", err)
	}
	if base.Seq, b, err = msgp.ReadUint64Bytes(b); err != nil {
		return fail("seq", err)
	}
	sec0, b, err := msgp.ReadInt64Bytes(b)
	if err != nil {
		return fail("time", err)
	}
	base.Time = sec0 * 1000 // wraps like the encoder's for absurd values
	bin, b, err := msgp.ReadBytesZC(b)
	if err != nil {
		return fail("positions", err)
	}
	nOthers, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return fail("others", err)
	}
	if nOthers > count {
		return fail("others", fmt.Errorf("%d other records in a batch of %d", nOthers, count))
	}
	recs = make([]kestrel.Record, count)
	isOther := make([]bool, count)
	next := 0 // lowest index an other record may take
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
		r.Device = device
		recs[idx] = r
		isOther[idx] = true
	}
	nPos := int(count - nOthers)
	pos := make([]kestrel.Position, nPos)
	if err := decodePositions(bin, pos, recs, isOther, &base, device); err != nil {
		return fail("positions", err)
	}
	// Fields a later version appends to the batch are skipped.
	for i := uint32(batchFields); i < n; i++ {
		if b, err = msgp.Skip(b); err != nil {
			return fail("trailing field", err)
		}
	}
	return device, recs, b, nil
}

func decodeOther(b []byte, base *kestrel.Envelope) (idx int, r kestrel.Record, rest []byte, err error) {
	n, b, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return 0, r, nil, err
	}
	if n < 7 {
		return 0, r, nil, fmt.Errorf("%d fields, want 7", n)
	}
	i, b, err := msgp.ReadUint32Bytes(b)
	if err != nil {
		return 0, r, nil, fmt.Errorf("index: %w", err)
	}
	k, b, err := msgp.ReadUint8Bytes(b)
	if err != nil {
		return 0, r, nil, fmt.Errorf("kind: %w", err)
	}
	var dBoot, dSeq, dTime int64
	if dBoot, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return 0, r, nil, fmt.Errorf("boot: %w", err)
	}
	if dSeq, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return 0, r, nil, fmt.Errorf("seq: %w", err)
	}
	if dTime, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return 0, r, nil, fmt.Errorf("time: %w", err)
	}
	p, b, err := msgp.ReadUint8Bytes(b)
	if err != nil {
		return 0, r, nil, fmt.Errorf("priority: %w", err)
	}
	r.Boot = uint32(int64(base.Boot) + dBoot)
	r.Seq = base.Seq + uint64(dSeq)
	r.Time = base.Time + dTime
	r.Priority = kestrel.Priority(p)
	if r.Body, b, err = decodeBody(b, kestrel.Kind(k)); err != nil {
		return 0, r, nil, err
	}
	for j := uint32(7); j < n; j++ {
		if b, err = msgp.Skip(b); err != nil {
			return 0, r, nil, err
		}
	}
	return int(i), r, b, nil
}

func decodePositions(bin []byte, pos []kestrel.Position, recs []kestrel.Record, isOther []bool, base *kestrel.Envelope, device string) error {
	n := len(pos)
	if n == 0 {
		return nil
	}
	br := bitReader{b: bin}
	vals := make([]uint64, n)
	flags := make([]uint64, n)
	decodeColumn(&br, flags, nil, colRef(colFlags, base))
	for i := range pos {
		pos[i].Flags = kestrel.PosFlags(flags[i])
	}
	// Place the positions in the slots the other records left free.
	j := 0
	for i := range recs {
		if isOther[i] {
			continue
		}
		recs[i].Device = device
		recs[i].Body = &pos[j]
		j++
	}
	var lat, lon, tm []uint64 // full columns, kept for the predictions
	var steps []step
	for c := colTime; c < numCols; c++ {
		if br.bad {
			return fmt.Errorf("truncated before column %d", c)
		}
		m, col := columnRows(c, pos, n, vals)
		predicted := false
		if (c == colSpeed || c == colTrack) && m > 0 {
			predicted = br.read(1) == 1
		}
		var times []uint64
		switch c {
		case colLat, colLon:
			times = tm
		case colAlt:
			times = gatedTimes(nil, flags, tm, uint64(kestrel.HasAlt))
		}
		decodeColumn(&br, col, times, colRef(c, base))
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
	if br.bad {
		return fmt.Errorf("truncated bit stream")
	}
	return nil
}

// gatedTimes returns the times of the fixes that have flag set.
func gatedTimes(dst, flags, times []uint64, flag uint64) []uint64 {
	dst = dst[:0]
	for i, f := range flags {
		if f&flag != 0 && i < len(times) {
			dst = append(dst, times[i])
		}
	}
	return dst
}

// floorSec is t ms in whole seconds, rounded down (also before 1970).
func floorSec(t int64) int64 {
	s := t / 1000
	if t%1000 < 0 {
		s--
	}
	return s
}

// setColumn stores the decoded values of column c in the positions and
// their records (the records that are not positions are skipped).
func setColumn(c int, col []uint64, pos []kestrel.Position, recs []kestrel.Record, isOther []bool) {
	j, ri := 0, 0
	for i := range pos {
		if f := colFlag[c]; f != 0 && pos[i].Flags&f == 0 {
			continue
		}
		v := col[j]
		j++
		p := &pos[i]
		switch c {
		case colTime, colSeq, colBoot, colPriority:
			for isOther[ri] {
				ri++
			}
			r := &recs[ri]
			ri++
			switch c {
			case colTime:
				r.Time = int64(v)
			case colSeq:
				r.Seq = v
			case colBoot:
				r.Boot = uint32(v)
			case colPriority:
				r.Priority = kestrel.Priority(v)
			}
		case colLat:
			p.Lat = int32(v)
		case colLon:
			p.Lon = int32(v)
		case colAlt:
			p.Alt = int32(v)
		case colSpeed:
			p.Speed = int32(v)
		case colTrack:
			p.Track = uint16(v)
		case colMode:
			p.Mode = kestrel.FixMode(v)
		case colSats:
			p.Sats = uint8(v)
		case colHDOP:
			p.HDOP = uint16(v)
		case colEPH:
			p.EPH = uint32(v)
		case colEPV:
			p.EPV = uint32(v)
		case colCoarsened:
			p.Coarsened = uint32(v)
		}
	}
}
