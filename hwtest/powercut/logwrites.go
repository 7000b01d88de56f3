package powercut

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The dm-log-writes log (Documentation/admin-guide/device-mapper/
// log-writes.rst; xfstests' src/log-writes is the reference replayer):
//
//	sector 0:   super  {magic u64, version u64, nr_entries u64, sectorsize u32} LE
//	then per entry: one sector {sector u64, nr_sectors u64, flags u64, data_len u64,
//	                            mark label (data_len bytes) for marks}
//	                followed by nr_sectors sectors of data (none for discards)
//
// Sector numbers and counts are in units of the super's sectorsize. Writes
// are logged in completion order; a flush entry follows every write that
// completed before the flush was issued, so everything before it is on the
// medium once it is; a FUA write is on the medium once logged.

const (
	logMagic   = 0x6a736677736872
	logVersion = 1

	FlagFlush    = 1 << 0
	FlagFUA      = 1 << 1
	FlagDiscard  = 1 << 2
	FlagMark     = 1 << 3
	FlagMetadata = 1 << 4
)

// Entry is one logged operation.
type Entry struct {
	Sector  uint64 // first sector written (sectorsize units)
	Sectors uint64
	Flags   uint64
	Mark    string // FlagMark: the label
	data    int64  // offset of the data in the log
}

// WriteLog is a parsed log; data is read from the log file when replayed.
type WriteLog struct {
	r          io.ReaderAt
	SectorSize int64
	Entries    []Entry
}

// ParseLog reads the entries of a log of size bytes. Every count is checked
// against the size, so a damaged log is an error, never a huge allocation.
func ParseLog(r io.ReaderAt, size int64) (*WriteLog, error) {
	var sb [28]byte
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("write log super: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint64(sb[0:]) != logMagic {
		return nil, errors.New("write log: bad magic (not a dm-log-writes log)")
	}
	if v := le.Uint64(sb[8:]); v != logVersion {
		return nil, fmt.Errorf("write log: version %d, want %d", v, logVersion)
	}
	n := le.Uint64(sb[16:])
	ss := int64(le.Uint32(sb[24:]))
	if ss < 512 || ss > 64<<10 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("write log: sector size %d", ss)
	}
	if n > uint64(size/ss) {
		return nil, fmt.Errorf("write log: %d entries in %d bytes", n, size)
	}
	l := &WriteLog{r: r, SectorSize: ss, Entries: make([]Entry, 0, n)}
	hdr := make([]byte, ss)
	pos := ss
	for i := uint64(0); i < n; i++ {
		if pos+ss > size {
			return nil, fmt.Errorf("write log: entry %d at %d beyond the end", i, pos)
		}
		if _, err := r.ReadAt(hdr, pos); err != nil {
			return nil, fmt.Errorf("write log: entry %d: %w", i, err)
		}
		e := Entry{Sector: le.Uint64(hdr[0:]), Sectors: le.Uint64(hdr[8:]), Flags: le.Uint64(hdr[16:])}
		dlen := le.Uint64(hdr[24:])
		if e.Flags == 0 && e.Sectors == 0 {
			return nil, fmt.Errorf("write log: entry %d at %d is empty", i, pos)
		}
		if e.Flags&FlagMark != 0 {
			if dlen > uint64(ss-32) {
				return nil, fmt.Errorf("write log: entry %d: mark of %d bytes", i, dlen)
			}
			e.Mark = string(hdr[32 : 32+dlen])
		}
		pos += ss
		e.data = pos
		if e.Flags&FlagDiscard == 0 {
			if e.Sectors > uint64((size-pos)/ss) {
				return nil, fmt.Errorf("write log: entry %d: %d sectors beyond the end", i, e.Sectors)
			}
			pos += int64(e.Sectors) * ss
		}
		l.Entries = append(l.Entries, e)
	}
	return l, nil
}

// Writes reports whether e changes the medium.
func (e *Entry) Writes() bool { return e.Sectors > 0 }

// Apply replays e onto dst (a discard zeroes its range, as replay-log does
// where the target cannot discard). buf is scratch, returned grown.
func (l *WriteLog) Apply(e *Entry, dst io.WriterAt, buf []byte) ([]byte, error) {
	if !e.Writes() {
		return buf, nil
	}
	n := int64(e.Sectors) * l.SectorSize
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if e.Flags&FlagDiscard != 0 {
		clear(buf)
	} else if _, err := l.r.ReadAt(buf, e.data); err != nil {
		return buf, fmt.Errorf("write log: data of sector %d: %w", e.Sector, err)
	}
	_, err := dst.WriteAt(buf, int64(e.Sector)*l.SectorSize)
	return buf, err
}
