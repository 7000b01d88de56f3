package iio

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The buffered interface (kernel Documentation/driver-api/iio/buffers.rst,
// Documentation/ABI/testing/sysfs-bus-iio, tools/iio/iio_generic_buffer.c):
// enable the channels in scan_elements, attach a trigger, size the kernel
// FIFO (buffer/length) and its wake-up point (buffer/watermark), set
// buffer/enable, and read whole scans from /dev/iio:deviceN. One read
// returns every scan the FIFO holds, so the agent wakes once per batch
// instead of once per sample.

// errNoBuffer: the device offers no buffered interface; poll sysfs.
var errNoBuffer = errors.New("no buffered interface")

// buffered is an enabled buffer: the open character device and its layout.
type buffered struct {
	dir    string
	dev    *os.File
	layout scanLayout
	batch  int // scans per wake-up (the watermark)
}

// openBuffer sets the buffer up, or says why it cannot.
func (a *Accel) openBuffer(dir string) (*buffered, error) {
	se := filepath.Join(dir, "scan_elements")
	if _, err := os.Stat(se); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errNoBuffer, se, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "buffer/enable")); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	devPath := filepath.Join(a.opts.DevRoot, filepath.Base(dir))
	if fi, err := os.Stat(devPath); err != nil || fi.Mode()&(os.ModeCharDevice|os.ModeNamedPipe) == 0 {
		return nil, fmt.Errorf("%w: %s is not a character device", errNoBuffer, devPath)
	}
	// The buffer must be off while its set-up changes.
	_ = writeAttr(filepath.Join(dir, "buffer/enable"), "0")
	for _, ch := range []string{"in_accel_x_en", "in_accel_y_en", "in_accel_z_en"} {
		if err := writeAttr(filepath.Join(se, ch), "1"); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
		}
	}
	if _, err := os.Stat(filepath.Join(se, "in_timestamp_en")); err == nil {
		if err := writeAttr(filepath.Join(se, "in_timestamp_en"), "1"); err != nil {
			a.log.Debug("no timestamp channel", "err", err)
		}
		// Timestamps on the wall clock, as records are stamped.
		if _, err := os.Stat(filepath.Join(dir, "current_timestamp_clock")); err == nil {
			_ = writeAttr(filepath.Join(dir, "current_timestamp_clock"), "realtime")
		}
	}
	if err := a.attachTrigger(dir); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	batch := max(1, int(math.Round(a.opts.Rate*a.opts.Batch.Seconds())))
	if err := writeAttr(filepath.Join(dir, "buffer/length"), strconv.Itoa(max(4*batch, 64))); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "buffer/watermark")); err == nil {
		if err := writeAttr(filepath.Join(dir, "buffer/watermark"), strconv.Itoa(batch)); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
		}
	} else {
		batch = 1 // before watermarks (Linux 4.2) a read wakes at each scan
	}
	layout, err := readLayout(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	// Non-blocking, so the Go runtime's poller waits on it (the buffer
	// supports poll: readable at the watermark) and a deadline stops it.
	dev, err := os.OpenFile(devPath, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	if err := writeAttr(filepath.Join(dir, "buffer/enable"), "1"); err != nil {
		dev.Close()
		return nil, fmt.Errorf("%w: %w", errNoBuffer, err)
	}
	return &buffered{dir: dir, dev: dev, layout: layout, batch: batch}, nil
}

// attachTrigger sets trigger/current_trigger when the device has one and
// none is set: the device's own data-ready trigger if there is one (its
// name starts with the device's name, as st_accel's "lis3dh-trigger"),
// else the first trigger. A device without a trigger directory fills its
// buffer from a hardware FIFO and needs none.
func (a *Accel) attachTrigger(dir string) error {
	cur := filepath.Join(dir, "trigger/current_trigger")
	if _, err := os.Stat(cur); err != nil {
		return nil
	}
	if s, _ := readString(cur); s != "" {
		return nil
	}
	name, _ := readString(filepath.Join(dir, "name"))
	base := filepath.Dir(dir)
	ents, _ := os.ReadDir(base)
	var first, own string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "trigger") {
			continue
		}
		tn, err := readString(filepath.Join(base, e.Name(), "name"))
		if err != nil || tn == "" {
			continue
		}
		if first == "" {
			first = tn
		}
		if name != "" && strings.HasPrefix(tn, name) && own == "" {
			own = tn
		}
	}
	t := own
	if t == "" {
		t = first
	}
	if t == "" {
		return errors.New("no trigger to attach (no data-ready trigger and no software trigger)")
	}
	return writeAttr(cur, t)
}

func (b *buffered) close() {
	_ = writeAttr(filepath.Join(b.dir, "buffer/enable"), "0")
	b.dev.Close()
}

// run reads batches until ctx ends.
func (a *Accel) runBuffered(ctx context.Context, b *buffered, ax *[3]axis, emit func(kestrel.Record)) error {
	stop := context.AfterFunc(ctx, func() { b.dev.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	period := time.Duration(float64(time.Second) / a.opts.Rate)
	size := b.layout.size
	// Room for a whole FIFO's worth, bounded: 4 batches of up to 64 B scans.
	buf := make([]byte, size*max(4*b.batch, 64))
	have := 0
	for {
		n, err := b.dev.Read(buf[have:])
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("iio: %s: %w", b.dev.Name(), err)
		}
		have += n
		scans := have / size
		now := a.opts.Now()
		for i := range scans {
			raw, ts := b.layout.decode(buf[i*size : (i+1)*size])
			var v [3]int32
			ok := true
			for j := range raw {
				if v[j], ok = ax[j].mm(float64(raw[j])); !ok {
					break
				}
			}
			if !ok {
				continue
			}
			s := kestrel.Accel{X: v[0], Y: v[1], Z: v[2]}
			ms := now.Add(-time.Duration(scans-1-i) * period).UnixMilli()
			if ts > 0 {
				ms = ts / 1e6
			}
			emit(kestrel.Record{Envelope: kestrel.Envelope{Time: ms, Priority: a.opts.Priority}, Body: &s})
		}
		// A partial scan (a FIFO stand-in may split one) waits for the rest.
		rest := have - scans*size
		copy(buf, buf[scans*size:have])
		have = rest
	}
}

// writeAttr writes one sysfs attribute.
func writeAttr(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0) // as the shell's "echo 1 > attr"
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
