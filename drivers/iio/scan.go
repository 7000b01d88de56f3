package iio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// scanType is one channel's in_*_type attribute, as sysfs-bus-iio
// documents it: "[be|le]:[s|u]bits/storagebits[Xrepeat]>>shift", e.g.
// "le:s12/16>>4" for a LIS3DH axis, "le:s64/64>>0" for the timestamp.
type scanType struct {
	bigEndian bool
	signed    bool
	bits      int // realbits
	storage   int // storagebits: 8, 16, 32 or 64
	shift     int
}

var errRepeat = errors.New("repeated channels (X) are not supported")

// parseScanType reads an in_*_type attribute.
func parseScanType(s string) (scanType, error) {
	var st scanType
	s = strings.TrimSpace(s)
	endian, rest, ok := strings.Cut(s, ":")
	if !ok {
		return st, fmt.Errorf("scan type %q: no ':'", s)
	}
	switch endian {
	case "be":
		st.bigEndian = true
	case "le":
	default:
		return st, fmt.Errorf("scan type %q: endianness %q", s, endian)
	}
	if len(rest) == 0 || (rest[0] != 's' && rest[0] != 'u') {
		return st, fmt.Errorf("scan type %q: want s or u", s)
	}
	st.signed = rest[0] == 's'
	rest = rest[1:]
	sizes, shift, ok := strings.Cut(rest, ">>")
	if !ok {
		return st, fmt.Errorf("scan type %q: no '>>'", s)
	}
	if strings.Contains(sizes, "X") {
		return st, fmt.Errorf("scan type %q: %w", s, errRepeat)
	}
	bits, storage, ok := strings.Cut(sizes, "/")
	if !ok {
		return st, fmt.Errorf("scan type %q: no '/'", s)
	}
	var err error
	if st.bits, err = strconv.Atoi(bits); err != nil {
		return st, fmt.Errorf("scan type %q: bits: %w", s, err)
	}
	if st.storage, err = strconv.Atoi(storage); err != nil {
		return st, fmt.Errorf("scan type %q: storage bits: %w", s, err)
	}
	if st.shift, err = strconv.Atoi(shift); err != nil {
		return st, fmt.Errorf("scan type %q: shift: %w", s, err)
	}
	switch st.storage {
	case 8, 16, 32, 64:
	default:
		return st, fmt.Errorf("scan type %q: storage bits %d", s, st.storage)
	}
	if st.bits < 1 || st.shift < 0 || st.bits+st.shift > st.storage {
		return st, fmt.Errorf("scan type %q: %d bits shifted %d do not fit %d", s, st.bits, st.shift, st.storage)
	}
	return st, nil
}

// value extracts the channel's value from its storage bytes.
func (st scanType) value(b []byte) int64 {
	var u uint64
	switch st.storage {
	case 8:
		u = uint64(b[0])
	case 16:
		if st.bigEndian {
			u = uint64(binary.BigEndian.Uint16(b))
		} else {
			u = uint64(binary.LittleEndian.Uint16(b))
		}
	case 32:
		if st.bigEndian {
			u = uint64(binary.BigEndian.Uint32(b))
		} else {
			u = uint64(binary.LittleEndian.Uint32(b))
		}
	case 64:
		if st.bigEndian {
			u = binary.BigEndian.Uint64(b)
		} else {
			u = binary.LittleEndian.Uint64(b)
		}
	}
	u >>= uint(st.shift)
	if st.bits < 64 {
		u &= 1<<uint(st.bits) - 1
		if st.signed && u&(1<<uint(st.bits-1)) != 0 {
			u |= ^uint64(0) << uint(st.bits)
		}
	}
	return int64(u)
}

// scanChannel is an enabled channel's place in a scan.
type scanChannel struct {
	name   string // "accel_x", "timestamp", ...
	index  int
	typ    scanType
	offset int // bytes from the start of the scan
}

// scanLayout is the layout of one scan in the buffer: the enabled
// channels in index order, each aligned to its own storage size, the scan
// padded to the largest (the kernel's iio_compute_scan_bytes).
type scanLayout struct {
	chans []scanChannel
	size  int
	axis  [3]int // position in chans of accel x, y, z
	ts    int    // position of the timestamp; -1 without
}

// readLayout reads scan_elements for the enabled channels.
func readLayout(dir string) (scanLayout, error) {
	l := scanLayout{ts: -1, axis: [3]int{-1, -1, -1}}
	se := filepath.Join(dir, "scan_elements")
	ents, err := os.ReadDir(se)
	if err != nil {
		return l, err
	}
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), "_en")
		if !ok {
			continue
		}
		en, err := readString(filepath.Join(se, e.Name()))
		if err != nil {
			return l, err
		}
		if en != "1" {
			continue
		}
		idx, err := readString(filepath.Join(se, n+"_index"))
		if err != nil {
			return l, err
		}
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 {
			return l, fmt.Errorf("%s_index %q", n, idx)
		}
		ts, err := readString(filepath.Join(se, n+"_type"))
		if err != nil {
			return l, err
		}
		st, err := parseScanType(ts)
		if err != nil {
			return l, fmt.Errorf("%s: %w", n, err)
		}
		l.chans = append(l.chans, scanChannel{name: strings.TrimPrefix(n, "in_"), index: i, typ: st})
	}
	sort.Slice(l.chans, func(a, b int) bool { return l.chans[a].index < l.chans[b].index })
	largest := 1
	for i := range l.chans {
		sz := l.chans[i].typ.storage / 8
		l.size = (l.size + sz - 1) / sz * sz
		l.chans[i].offset = l.size
		l.size += sz
		largest = max(largest, sz)
		switch l.chans[i].name {
		case "accel_x":
			l.axis[0] = i
		case "accel_y":
			l.axis[1] = i
		case "accel_z":
			l.axis[2] = i
		case "timestamp":
			l.ts = i
		}
	}
	l.size = (l.size + largest - 1) / largest * largest
	for _, a := range l.axis {
		if a < 0 {
			return l, errors.New("accel x, y and z are not all enabled")
		}
	}
	return l, nil
}

// decode reads the three axes' raw counts and the timestamp (ns, 0
// without) from one scan of l.size bytes.
func (l *scanLayout) decode(b []byte) (raw [3]int64, ts int64) {
	for i, a := range l.axis {
		c := &l.chans[a]
		raw[i] = c.typ.value(b[c.offset:])
	}
	if l.ts >= 0 {
		c := &l.chans[l.ts]
		ts = c.typ.value(b[c.offset:])
	}
	return raw, ts
}
