package fakesysfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BufferedAccel is a fake IIO accelerometer with the buffered interface
// (kernel Documentation/driver-api/iio/buffers.rst and the sysfs-bus-iio
// ABI): scan_elements (in_accel_{x,y,z}_{en,index,type} and
// in_timestamp_*), buffer/{enable,length,watermark}, trigger/current_trigger,
// a data-ready trigger device "<name>-trigger", and a FIFO standing in for
// the character device /dev/iio:deviceN. Write puts scans in the FIFO in
// the layout the kernel uses, and only while the buffer is enabled with a
// trigger attached and the axes enabled, as the kernel fills it only then.
// Debian's kernel has neither the IIO dummy driver nor a software trigger,
// so this is the buffered path's test boundary.
type BufferedAccel struct {
	Dir string // device directory, relative to the tree's root
	Dev string // path of the FIFO standing in for the character device
	t   *Tree
	w   *os.File // held open read-write, so the reader never sees EOF
	typ string   // in_accel_*_type
}

// AddBufferedAccel adds a buffered accelerometer named name with a shared
// scale; axisType is each axis's in_accel_*_type (e.g. "le:s12/16>>4",
// a LIS3DH, or "be:s14/16>>2", an MMA8452). The FIFO goes in devDir.
func (t *Tree) AddBufferedAccel(name, scale, axisType, devDir string) (*BufferedAccel, error) {
	dir, err := t.AddAccel(name, scale)
	if err != nil {
		return nil, err
	}
	kv := [][2]string{
		{"current_timestamp_clock", "realtime"},
		{"buffer/enable", "0"}, {"buffer/length", "2"}, {"buffer/watermark", "1"},
		{"trigger/current_trigger", ""},
		{"scan_elements/in_timestamp_en", "0"}, {"scan_elements/in_timestamp_index", "3"},
		{"scan_elements/in_timestamp_type", "le:s64/64>>0"},
	}
	for i, ax := range []string{"x", "y", "z"} {
		kv = append(kv,
			[2]string{"scan_elements/in_accel_" + ax + "_en", "0"},
			[2]string{"scan_elements/in_accel_" + ax + "_index", strconv.Itoa(i)},
			[2]string{"scan_elements/in_accel_" + ax + "_type", axisType})
	}
	if err := t.writeAll(dir, kv); err != nil {
		return nil, err
	}
	trig := filepath.Join("bus/iio/devices", "trigger"+strings.TrimPrefix(filepath.Base(dir), "iio:device"))
	if err := t.Write(filepath.Join(trig, "name"), name+"-trigger"); err != nil {
		return nil, err
	}
	dev := filepath.Join(devDir, filepath.Base(dir))
	if err := syscall.Mkfifo(dev, 0o600); err != nil {
		return nil, fmt.Errorf("fakesysfs: mkfifo %s: %w", dev, err)
	}
	w, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("fakesysfs: %w", err)
	}
	return &BufferedAccel{Dir: dir, Dev: dev, t: t, w: w, typ: axisType}, nil
}

// Close unplugs the character device: a reader sees it end.
func (b *BufferedAccel) Close() error { return b.w.Close() }

func (b *BufferedAccel) attr(rel string) string {
	s, _ := b.t.Read(filepath.Join(b.Dir, rel))
	return strings.TrimSpace(s)
}

// Watermark is the buffer/watermark the driver set.
func (b *BufferedAccel) Watermark() int {
	n, _ := strconv.Atoi(b.attr("buffer/watermark"))
	return max(n, 1)
}

// ErrBufferOff: the driver has not enabled the buffer (or left a channel
// or the trigger out), so the kernel would fill nothing.
var ErrBufferOff = errors.New("fakesysfs: buffer not enabled")

// Write puts one scan per sample (raw counts per axis) into the
// character device, stamped with ts (ns on CLOCK_REALTIME) when the
// timestamp channel is enabled.
func (b *BufferedAccel) Write(samples [][3]int, ts []int64) error {
	if b.attr("buffer/enable") != "1" || b.attr("trigger/current_trigger") == "" {
		return ErrBufferOff
	}
	for _, ax := range []string{"x", "y", "z"} {
		if b.attr("scan_elements/in_accel_"+ax+"_en") != "1" {
			return ErrBufferOff
		}
	}
	withTS := b.attr("scan_elements/in_timestamp_en") == "1"
	bigEndian, bits, storage, shift, err := parseType(b.typ)
	if err != nil {
		return err
	}
	// The kernel's layout: each channel aligned to its storage size, in
	// index order (x, y, z, timestamp), the scan padded to the largest.
	sz := storage / 8
	scan, tsOff := 3*sz, (3*sz+7)/8*8
	if withTS {
		scan = tsOff + 8
	}
	out := make([]byte, 0, scan*len(samples))
	for i, s := range samples {
		rec := make([]byte, scan)
		for a := range s {
			u := (uint64(int64(s[a])) & (1<<uint(bits) - 1)) << uint(shift)
			put(rec[a*sz:], sz, bigEndian, u)
		}
		if withTS {
			binary.LittleEndian.PutUint64(rec[tsOff:], uint64(ts[i]))
		}
		out = append(out, rec...)
	}
	_, err = b.w.Write(out)
	return err
}

func put(b []byte, sz int, be bool, u uint64) {
	switch {
	case sz == 1:
		b[0] = byte(u)
	case sz == 2 && be:
		binary.BigEndian.PutUint16(b, uint16(u))
	case sz == 2:
		binary.LittleEndian.PutUint16(b, uint16(u))
	case sz == 4 && be:
		binary.BigEndian.PutUint32(b, uint32(u))
	case sz == 4:
		binary.LittleEndian.PutUint32(b, uint32(u))
	case be:
		binary.BigEndian.PutUint64(b, u)
	default:
		binary.LittleEndian.PutUint64(b, u)
	}
}

// parseType reads "[be|le]:[s|u]bits/storagebits>>shift".
func parseType(s string) (bigEndian bool, bits, storage, shift int, err error) {
	var sign byte
	var e string
	if len(s) < 3 {
		return false, 0, 0, 0, fmt.Errorf("fakesysfs: scan type %q", s)
	}
	e, s = s[:2], s[3:]
	if _, err = fmt.Sscanf(s, "%c%d/%d>>%d", &sign, &bits, &storage, &shift); err != nil {
		return false, 0, 0, 0, fmt.Errorf("fakesysfs: scan type %q: %w", s, err)
	}
	return e == "be", bits, storage, shift, nil
}

// Feed writes a scan of sample() every 1/rate seconds in batches of the
// driver's watermark, as the kernel wakes a reader, until ctx ends. Scans
// made while the buffer is off are dropped, as the kernel drops them. It
// returns how many scans reached the character device.
func (b *BufferedAccel) Feed(ctx context.Context, rate float64, sample func(n int) [3]int) (delivered int) {
	period := time.Duration(float64(time.Second) / rate)
	n := 0
	for {
		wm := b.Watermark()
		select {
		case <-ctx.Done():
			return delivered
		case <-time.After(time.Duration(wm) * period):
		}
		now := time.Now()
		batch := make([][3]int, wm)
		ts := make([]int64, wm)
		for i := range batch {
			batch[i] = sample(n)
			ts[i] = now.Add(-time.Duration(wm-1-i) * period).UnixNano()
			n++
		}
		if b.Write(batch, ts) == nil {
			delivered += wm
		}
	}
}
