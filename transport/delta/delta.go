package delta

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"index/suffixarray"
	"io"

	"github.com/klauspost/compress/zstd"
)

const (
	magic      = "KBSDIF01"
	headerSize = 40
	tripleSize = 24
	// maxWindow bounds the zstd decoders' window (and so their memory);
	// Diff's encoder stays well under it.
	maxWindow = 8 << 20
)

// Errors Patch returns, wrapped with detail.
var (
	ErrMalformed = errors.New("malformed delta")
	ErrTooLarge  = errors.New("delta output too large")
	ErrWrongBase = errors.New("delta was made against another base")
)

// Diff returns a kestrel-bsdiff/1 patch that turns old into new.
func Diff(old, new []byte) ([]byte, error) {
	sa := suffixArray(old)
	var ctrl, db, eb bytes.Buffer
	var pending []int64 // the last triple, held back so an empty one can fold into it
	emit := func(add, cp, seek int64) {
		if pending != nil && add == 0 && cp == 0 {
			pending[2] += seek
			return
		}
		if pending != nil {
			writeTriple(&ctrl, pending)
		}
		pending = []int64{add, cp, seek}
	}
	oldSize, newSize := len(old), len(new)
	var scan, pos, length, lastScan, lastPos, lastOffset int
	for scan < newSize {
		oldScore := 0
		scan += length
		for scsc := scan; scan < newSize; scan++ {
			length, pos = search(sa, old, new[scan:])
			for ; scsc < scan+length; scsc++ {
				if scsc+lastOffset < oldSize && scsc+lastOffset >= 0 && old[scsc+lastOffset] == new[scsc] {
					oldScore++
				}
			}
			if (length == oldScore && length != 0) || length > oldScore+8 {
				break
			}
			if scan+lastOffset < oldSize && scan+lastOffset >= 0 && old[scan+lastOffset] == new[scan] {
				oldScore--
			}
		}
		if length == oldScore && scan != newSize {
			continue
		}
		// Extend the last match forward and this one backward.
		s, sf, lenf := 0, 0, 0
		for i := 0; lastScan+i < scan && lastPos+i < oldSize; {
			if old[lastPos+i] == new[lastScan+i] {
				s++
			}
			i++
			if s*2-i > sf*2-lenf {
				sf, lenf = s, i
			}
		}
		lenb := 0
		if scan < newSize {
			s, sb := 0, 0
			for i := 1; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == new[scan-i] {
					s++
				}
				if s*2-i > sb*2-lenb {
					sb, lenb = s, i
				}
			}
		}
		if lastScan+lenf > scan-lenb {
			overlap := (lastScan + lenf) - (scan - lenb)
			s, ss, lens := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if new[lastScan+lenf-overlap+i] == old[lastPos+lenf-overlap+i] {
					s++
				}
				if new[scan-lenb+i] == old[pos-lenb+i] {
					s--
				}
				if s > ss {
					ss, lens = s, i+1
				}
			}
			lenf += lens - overlap
			lenb -= lens
		}
		for i := 0; i < lenf; i++ {
			db.WriteByte(new[lastScan+i] - old[lastPos+i])
		}
		extra := (scan - lenb) - (lastScan + lenf)
		eb.Write(new[lastScan+lenf : lastScan+lenf+extra])
		emit(int64(lenf), int64(extra), int64((pos-lenb)-(lastPos+lenf)))
		lastScan, lastPos, lastOffset = scan-lenb, pos-lenb, pos-scan
	}
	if pending != nil {
		writeTriple(&ctrl, pending)
	}

	enc := encoder()
	defer enc.Close()
	c := enc.EncodeAll(ctrl.Bytes(), nil)
	d := enc.EncodeAll(zeroRuns(db.Bytes()), nil)
	e := enc.EncodeAll(eb.Bytes(), nil)
	out := make([]byte, headerSize, headerSize+len(c)+len(d)+len(e))
	copy(out, magic)
	binary.LittleEndian.PutUint64(out[8:], uint64(oldSize))
	binary.LittleEndian.PutUint64(out[16:], uint64(newSize))
	binary.LittleEndian.PutUint64(out[24:], uint64(len(c)))
	binary.LittleEndian.PutUint64(out[32:], uint64(len(d)))
	out = append(append(append(out, c...), d...), e...)
	return out, nil
}

// encoder is Diff's zstd encoder: best compression, a window the
// decoders accept, one frame even for an empty stream. The options are
// constants, so it cannot fail.
func encoder() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(maxWindow), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	if err != nil {
		panic("delta: zstd options: " + err.Error())
	}
	return enc
}

func writeTriple(w *bytes.Buffer, t []int64) {
	var b [tripleSize]byte
	for i, v := range t {
		binary.LittleEndian.PutUint64(b[i*8:], uint64(v))
	}
	w.Write(b[:])
}

// suffixArray returns the sorted suffix start offsets of data, from the
// standard library's SA-IS index, read back through its documented
// serialization (Index.Write: the data length and data, then blocks of a
// varint byte count followed by uvarint offsets).
func suffixArray(data []byte) []int {
	if len(data) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := suffixarray.New(data).Write(&buf); err != nil {
		return nil
	}
	b := buf.Bytes()
	n, k := binary.Varint(b)
	if k <= 0 || n != int64(len(data)) {
		return nil
	}
	b = b[binary.MaxVarintLen64+len(data):]
	sa := make([]int, 0, len(data))
	for len(b) >= binary.MaxVarintLen64 {
		size, k := binary.Varint(b)
		if k <= 0 || size < binary.MaxVarintLen64 || size > int64(len(b)) {
			return nil
		}
		blk := b[binary.MaxVarintLen64:size]
		for len(blk) > 0 {
			v, k := binary.Uvarint(blk)
			if k <= 0 || v >= uint64(len(data)) {
				return nil
			}
			sa = append(sa, int(v))
			blk = blk[k:]
		}
		b = b[size:]
	}
	if len(sa) != len(data) {
		return nil // the serialization changed: Diff still works, without matches
	}
	return sa
}

// search finds the longest prefix of target that occurs in old, by binary
// search over the suffix array (bsdiff's search, iterative).
func search(sa []int, old, target []byte) (length, pos int) {
	if len(sa) == 0 || len(target) == 0 {
		return 0, 0
	}
	st, en := 0, len(sa)-1
	for en-st >= 2 {
		x := st + (en-st)/2
		o := old[sa[x]:]
		if bytes.Compare(o[:min(len(o), len(target))], target[:min(len(o), len(target))]) < 0 {
			st = x
		} else {
			en = x
		}
	}
	x := matchLen(old[sa[st]:], target)
	y := matchLen(old[sa[en]:], target)
	if x > y {
		return x, sa[st]
	}
	return y, sa[en]
}

func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// Header is what a patch's header says.
type Header struct {
	OldSize, NewSize int64
}

// ReadHeader parses a patch's header.
func ReadHeader(patch []byte) (Header, error) {
	if len(patch) < headerSize {
		return Header{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrMalformed, len(patch), headerSize)
	}
	if string(patch[:8]) != magic {
		return Header{}, fmt.Errorf("%w: magic %q, want %q (kestrel-bsdiff/1)", ErrMalformed, patch[:8], magic)
	}
	h := Header{int64(binary.LittleEndian.Uint64(patch[8:])), int64(binary.LittleEndian.Uint64(patch[16:]))}
	if h.OldSize < 0 || h.NewSize < 0 {
		return Header{}, fmt.Errorf("%w: negative size in header", ErrMalformed)
	}
	return h, nil
}

// Patch applies a kestrel-bsdiff/1 patch to old and returns the new file.
// It refuses a patch whose new file would exceed maxSize bytes before
// allocating it, one made against a base of another size, and any patch
// that is not exactly well formed.
func Patch(old, patch []byte, maxSize int64) ([]byte, error) {
	h, err := ReadHeader(patch)
	if err != nil {
		return nil, err
	}
	if h.NewSize > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, h.NewSize, maxSize)
	}
	if h.OldSize != int64(len(old)) {
		return nil, fmt.Errorf("%w: base of %d bytes, this one is %d", ErrWrongBase, h.OldSize, len(old))
	}
	cLen, dLen := binary.LittleEndian.Uint64(patch[24:]), binary.LittleEndian.Uint64(patch[32:])
	body := patch[headerSize:]
	if cLen > uint64(len(body)) || dLen > uint64(len(body))-cLen {
		return nil, fmt.Errorf("%w: stream lengths %d+%d exceed the %d bytes after the header", ErrMalformed, cLen, dLen, len(body))
	}
	ctrl, err := newStream(body[:cLen], (h.NewSize+1)*tripleSize, "control")
	if err != nil {
		return nil, err
	}
	defer ctrl.close()
	diffZ, err := newStream(body[cLen:cLen+dLen], runsLimit(h.NewSize), "diff")
	if err != nil {
		return nil, err
	}
	defer diffZ.close()
	diff := &runReader{s: diffZ, br: bufio.NewReaderSize(diffZ.r, 4096), left: h.NewSize}
	extra, err := newStream(body[cLen+dLen:], h.NewSize, "extra")
	if err != nil {
		return nil, err
	}
	defer extra.close()

	out := make([]byte, h.NewSize)
	var newPos, oldPos int64
	var t [tripleSize]byte
	for n := 0; newPos < h.NewSize; n++ {
		if err := ctrl.read(t[:]); err != nil {
			return nil, fmt.Errorf("%w: control triple %d at output byte %d: %v", ErrMalformed, n, newPos, err)
		}
		add := int64(binary.LittleEndian.Uint64(t[0:]))
		cp := int64(binary.LittleEndian.Uint64(t[8:]))
		seek := int64(binary.LittleEndian.Uint64(t[16:]))
		switch {
		case add < 0 || cp < 0:
			return nil, fmt.Errorf("%w: control triple %d has a negative length", ErrMalformed, n)
		case add == 0 && cp == 0 && n > 0:
			return nil, fmt.Errorf("%w: control triple %d makes no progress", ErrMalformed, n)
		case add > h.NewSize-newPos || cp > h.NewSize-newPos-add:
			return nil, fmt.Errorf("%w: control triple %d writes past the new size %d", ErrMalformed, n, h.NewSize)
		case add > 0 && (oldPos < 0 || add > int64(len(old))-oldPos):
			return nil, fmt.Errorf("%w: control triple %d reads old bytes %d..%d outside the %d-byte base", ErrMalformed, n, oldPos, oldPos+add, len(old))
		}
		dst := out[newPos : newPos+add]
		if err := diff.read(dst); err != nil {
			return nil, fmt.Errorf("%w: diff stream at output byte %d: %v", ErrMalformed, newPos, err)
		}
		src := old[oldPos : oldPos+add]
		for i := range dst {
			dst[i] += src[i]
		}
		newPos += add
		oldPos += add
		if err := extra.read(out[newPos : newPos+cp]); err != nil {
			return nil, fmt.Errorf("%w: extra stream at output byte %d: %v", ErrMalformed, newPos, err)
		}
		newPos += cp
		if seek < -int64(len(old)) || seek > int64(len(old)) {
			return nil, fmt.Errorf("%w: control triple %d seeks %d in a %d-byte base", ErrMalformed, n, seek, len(old))
		}
		oldPos += seek
	}
	if err := diff.end(); err != nil {
		return nil, err
	}
	for _, s := range []*stream{ctrl, extra} {
		if err := s.end(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stream is one zstd-compressed stream of a patch, read with a bound.
type stream struct {
	name string
	dec  *zstd.Decoder
	r    io.Reader
}

func newStream(b []byte, limit int64, name string) (*stream, error) {
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderMaxMemory(2*maxWindow))
	if err != nil {
		return nil, fmt.Errorf("%w: %s stream: %v", ErrMalformed, name, err)
	}
	return &stream{name: name, dec: dec, r: io.LimitReader(dec, limit)}, nil
}

func (s *stream) read(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	_, err := io.ReadFull(s.r, p)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s stream ends early", s.name)
	}
	return err
}

// end checks the stream holds nothing more (and its frame checksums).
func (s *stream) end() error {
	var b [1]byte
	n, err := s.dec.Read(b[:])
	if n > 0 {
		return fmt.Errorf("%w: %s stream has bytes left over", ErrMalformed, s.name)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s stream: %v", ErrMalformed, s.name, err)
	}
	return nil
}

func (s *stream) close() { s.dec.Close() }

// zeroRuns encodes bsdiff's diff stream, mostly zeros with sparse changed
// bytes, as pairs (uvarint zeros, uvarint n, n literal bytes): a literal
// run ends at two zeros in a row. zstd compresses this form about a third
// smaller than the raw stream (docs/benchmarks.md).
func zeroRuns(b []byte) []byte {
	out := make([]byte, 0, len(b)/8+16)
	for i := 0; i < len(b); {
		z := i
		for z < len(b) && b[z] == 0 {
			z++
		}
		l := z
		for l < len(b) && !(b[l] == 0 && (l+1 == len(b) || b[l+1] == 0)) {
			l++
		}
		out = binary.AppendUvarint(out, uint64(z-i))
		out = binary.AppendUvarint(out, uint64(l-z))
		out = append(out, b[z:l]...)
		i = l
	}
	return out
}

// runsLimit bounds the decompressed zero-run form of a diff stream for a
// new file of n bytes: every pair but the first holds at least one byte
// of the stream, plus at most 20 bytes of counts.
func runsLimit(n int64) int64 { return 21*n + 64 }

// runReader expands the zero-run form back into diff bytes, never more
// than left in all.
type runReader struct {
	s           *stream
	br          *bufio.Reader
	zeros, lits int64
	left        int64
}

func (r *runReader) read(p []byte) error {
	for len(p) > 0 {
		switch {
		case r.zeros > 0:
			n := min(int64(len(p)), r.zeros)
			clear(p[:n])
			p, r.zeros = p[n:], r.zeros-n
		case r.lits > 0:
			n := min(int64(len(p)), r.lits)
			if _, err := io.ReadFull(r.br, p[:n]); err != nil {
				return fmt.Errorf("diff stream ends inside a literal run")
			}
			p, r.lits = p[n:], r.lits-n
		default:
			z, err1 := binary.ReadUvarint(r.br)
			l, err2 := binary.ReadUvarint(r.br)
			switch {
			case err1 != nil || err2 != nil:
				return fmt.Errorf("diff stream ends early")
			case z == 0 && l == 0:
				return fmt.Errorf("diff stream has an empty run")
			case z > uint64(r.left) || l > uint64(r.left)-z:
				return fmt.Errorf("diff stream run of %d+%d bytes exceeds the %d left", z, l, r.left)
			}
			r.zeros, r.lits = int64(z), int64(l)
			r.left -= int64(z + l)
		}
	}
	return nil
}

func (r *runReader) end() error {
	if r.zeros > 0 || r.lits > 0 {
		return fmt.Errorf("%w: diff stream has bytes left over", ErrMalformed)
	}
	if _, err := r.br.ReadByte(); err == nil {
		return fmt.Errorf("%w: diff stream has bytes left over", ErrMalformed)
	}
	return r.s.end()
}
