package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Frame layout (all frames, all segments):
//
//	crc32c  uint32 LE   over everything after it: the length and the body;
//	                    in version 2 segments seeded with the segment id
//	length  uvarint     bytes in the body
//	body    kind byte   type<<4 | priority
//	        type 1 (record): zigzag varint seq delta, zigzag varint time delta, payload
//	        type 2 (acks):   repeated zigzag varint first-seq delta, uvarint count-1
//	        type 3 (pad):    ignored bytes (version 2), so that the next group
//	                         commit starts on a sector of its own
//	        type 4 (record, absolute; version 3): uvarint seq, zigzag varint
//	                         time, uvarint ordinal (records before it in the
//	                         segment), payload. The first record of every
//	                         group commit, so that recovery can resynchronise
//	                         after damage and count exactly what it lost.
//	        type 5 (loss; version 3): uvarint records lost, uvarint first
//	                         seq, uvarint last seq, ignored bytes. Recovery
//	                         writes it over a damaged region it has counted,
//	                         so that the damage is counted once.
//
// The seed (the CRC32C of the segment id) makes a frame valid only in the
// segment it was written for: bytes left over from another segment can never
// pass for records of this one.
//
// Sequence numbers and times are deltas from the previous record of the same
// segment, so a 40-byte payload costs about 9 bytes of framing; a reader must
// start at the beginning of a segment, which recovery does anyway.

const (
	frameRecord    = 1
	frameAcks      = 2
	framePad       = 3
	frameRecordAbs = 4
	frameLoss      = 5

	// minPad is the smallest pad frame: checksum, a two-byte length and
	// the kind byte.
	minPad = 4 + 2 + 1

	// MaxPayload bounds one record so that a corrupt length can never make
	// recovery allocate wildly.
	MaxPayload = 1 << 20

	maxFrameHeader = 4 + binary.MaxVarintLen64 + 1 + 3*binary.MaxVarintLen64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errTorn    = errors.New("torn frame")
	errCorrupt = errors.New("corrupt frame")
)

// frameState carries the delta bases while reading or writing one segment.
type frameState struct {
	seq  uint64
	time int64
	n    uint64 // records so far in the segment (lost ones included)
	seed uint32 // CRC32C seed of the segment; 0 in version 1 segments
	// abs: the next record is written absolute (type 4), as the first
	// record of each group commit is.
	abs bool
}

// segSeed is the checksum seed of a version 2 segment.
func segSeed(id uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], id)
	return crc32.Checksum(b[:], castagnoli)
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// appendRecordFrame appends the frame of one record to dst and returns it with
// the offset, within the returned slice, where the frame starts.
func appendRecordFrame(dst []byte, st *frameState, it *Item) []byte {
	var hdr [1 + 3*binary.MaxVarintLen64]byte
	n := 1
	if st.abs {
		hdr[0] = frameRecordAbs<<4 | byte(it.Priority&3)
		n += binary.PutUvarint(hdr[n:], it.Seq)
		n += binary.PutUvarint(hdr[n:], zigzag(it.Time))
		n += binary.PutUvarint(hdr[n:], st.n)
		st.abs = false
	} else {
		hdr[0] = frameRecord<<4 | byte(it.Priority&3)
		n += binary.PutUvarint(hdr[n:], zigzag(int64(it.Seq-st.seq)))
		n += binary.PutUvarint(hdr[n:], zigzag(it.Time-st.time))
	}
	st.seq, st.time = it.Seq, it.Time
	st.n++
	return finishFrame(dst, st.seed, hdr[:n], it.Data)
}

// appendLossFrame appends frames of exactly n >= minPad bytes that mark a
// counted loss: a loss frame, and pad frames for what one frame cannot
// cover.
func appendLossFrame(dst []byte, seed uint32, n int, lost, first, last uint64) []byte {
	if n < minPad {
		return dst // no frame is that small (damage that no real frame leaves)
	}
	const maxBody = 1<<14 - 1 // a two-byte uvarint length
	var head []byte
	head = append(head, frameLoss<<4)
	head = binary.AppendUvarint(head, lost)
	head = binary.AppendUvarint(head, first)
	head = binary.AppendUvarint(head, last)
	for n > 0 {
		k := min(n, 6+maxBody)
		if rest := n - k; rest > 0 && rest < minPad {
			k -= minPad - rest
		}
		if k-6 < len(head) {
			dst = appendPadFrame(dst, seed, k)
			n -= k
			continue
		}
		start := len(dst)
		body := k - 6
		dst = append(dst, 0, 0, 0, 0, byte(body)|0x80, byte(body>>7))
		dst = append(dst, head...)
		dst = append(dst, make([]byte, body-len(head))...)
		binary.LittleEndian.PutUint32(dst[start:], crc32.Update(seed, castagnoli, dst[start+4:]))
		head = []byte{framePad << 4} // the rest are pads
		n -= k
	}
	return dst
}

// appendAckFrame appends one frame acknowledging the given runs of seqs.
func appendAckFrame(dst []byte, seed uint32, runs []seqRun) []byte {
	var body []byte
	body = append(body, frameAcks<<4)
	var prev uint64
	for _, r := range runs {
		body = binary.AppendUvarint(body, zigzag(int64(r.first-prev)))
		body = binary.AppendUvarint(body, r.n-1)
		prev = r.first
	}
	return finishFrame(dst, seed, body, nil)
}

// appendPadFrame appends a pad frame of exactly n >= minPad bytes. Its
// length is always written as two uvarint bytes (binary.Uvarint accepts the
// non-minimal form), so every size from minPad up is possible.
func appendPadFrame(dst []byte, seed uint32, n int) []byte {
	start := len(dst)
	body := n - 6
	dst = append(dst, 0, 0, 0, 0, byte(body)|0x80, byte(body>>7), framePad<<4)
	dst = append(dst, make([]byte, body-1)...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Update(seed, castagnoli, dst[start+4:]))
	return dst
}

func finishFrame(dst []byte, seed uint32, head, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.AppendUvarint(dst, uint64(len(head)+len(payload)))
	dst = append(dst, head...)
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Update(seed, castagnoli, dst[start+4:]))
	return dst
}

// frame is one decoded frame. Data aliases the input.
type frame struct {
	typ  byte
	item Item      // types record and absolute record
	ord  uint64    // type absolute record: its ordinal in the segment
	loss [3]uint64 // type loss: records lost, first seq, last seq
	acks []seqRun  // type acks (appended to the caller's slice)
}

func (f *frame) isRecord() bool { return f.typ == frameRecord || f.typ == frameRecordAbs }

// decodeFrame decodes the frame at the start of b. It returns errTorn when b
// ends inside the frame, and errCorrupt when the frame cannot be valid. A
// frame whose checksum fails is errCorrupt: a torn tail and a corrupt tail
// look the same to recovery, which stops there either way.
func decodeFrame(b []byte, st *frameState, acks []seqRun) (frame, int, error) {
	var f frame
	if len(b) < 5 {
		return f, 0, errTorn
	}
	n, w := binary.Uvarint(b[4:])
	if w == 0 {
		return f, 0, errTorn
	}
	if w < 0 || n == 0 || n > MaxPayload+1+2*binary.MaxVarintLen64 {
		return f, 0, errCorrupt
	}
	end := 4 + w + int(n)
	if len(b) < end {
		return f, 0, errTorn
	}
	if crc32.Update(st.seed, castagnoli, b[4:end]) != binary.LittleEndian.Uint32(b) {
		return f, 0, errCorrupt
	}
	body := b[4+w : end]
	f.typ = body[0] >> 4
	switch f.typ {
	case frameRecord:
		p := 1
		sd, w1 := binary.Uvarint(body[p:])
		if w1 <= 0 {
			return f, 0, errCorrupt
		}
		p += w1
		td, w2 := binary.Uvarint(body[p:])
		if w2 <= 0 {
			return f, 0, errCorrupt
		}
		p += w2
		st.seq += uint64(unzigzag(sd))
		st.time += unzigzag(td)
		st.n++
		f.item = Item{Seq: st.seq, Priority: kestrel.Priority(body[0] & 3), Time: st.time, Data: body[p:]}
	case frameRecordAbs:
		p := 1
		var v [3]uint64
		for k := range v {
			x, w := binary.Uvarint(body[p:])
			if w <= 0 {
				return f, 0, errCorrupt
			}
			v[k], p = x, p+w
		}
		st.seq, st.time, st.n = v[0], unzigzag(v[1]), v[2]
		f.item = Item{Seq: st.seq, Priority: kestrel.Priority(body[0] & 3), Time: st.time, Data: body[p:]}
		f.ord = v[2]
		st.n++
	case frameLoss:
		p := 1
		for k := range f.loss {
			x, w := binary.Uvarint(body[p:])
			if w <= 0 {
				return f, 0, errCorrupt
			}
			f.loss[k], p = x, p+w
		}
		st.n += f.loss[0]
	case frameAcks:
		p := 1
		var prev uint64
		for p < len(body) {
			d, w1 := binary.Uvarint(body[p:])
			if w1 <= 0 {
				return f, 0, errCorrupt
			}
			p += w1
			c, w2 := binary.Uvarint(body[p:])
			if w2 <= 0 {
				return f, 0, errCorrupt
			}
			p += w2
			prev += uint64(unzigzag(d))
			acks = append(acks, seqRun{first: prev, n: c + 1})
		}
		f.acks = acks
	case framePad:
	default:
		return f, 0, errCorrupt
	}
	return f, end, nil
}

// seqRun is the run of sequence numbers first .. first+n-1.
type seqRun struct {
	first, n uint64
}

// appendRun adds seq to runs, extending the last run when it is the next
// sequence number.
func appendRun(runs []seqRun, seq uint64) []seqRun {
	if k := len(runs) - 1; k >= 0 && runs[k].first+runs[k].n == seq {
		runs[k].n++
		return runs
	}
	return append(runs, seqRun{first: seq, n: 1})
}
