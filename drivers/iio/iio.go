package iio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Options configure an accelerometer source.
type Options struct {
	// Device selects the device by its "name" attribute (e.g. "lis3dh") or
	// directory ("iio:device0"). Empty takes the first accelerometer.
	Device string
	// Rate is samples per second. Default 10. It is also written to the
	// device's sampling_frequency when that attribute exists, so the part
	// filters at the rate it is read.
	Rate float64
	// DevRoot holds the character devices (normally "/dev"); the buffered
	// interface reads DevRoot/iio:deviceN.
	DevRoot string
	// Batch is how long a buffered read collects samples before the
	// kernel wakes the reader (buffer/watermark = Rate × Batch). Default
	// 200 ms. Polling sysfs is used when the device has no buffer.
	Batch time.Duration
	// Poll forces sysfs polling even where a buffer exists.
	Poll bool
	// Priority of the sample records. Default bulk: samples are many and
	// the first to go when the spool is full.
	Priority kestrel.Priority
	Logger   *slog.Logger
	Now      func() time.Time
}

// Accel is an accelerometer source.
type Accel struct {
	root string
	opts Options
	log  *slog.Logger
}

// New prepares an accelerometer under the sysfs root (normally "/sys").
func New(root string, opts Options) *Accel {
	if opts.Rate <= 0 {
		opts.Rate = 10
	}
	if opts.DevRoot == "" {
		opts.DevRoot = "/dev"
	}
	if opts.Batch <= 0 {
		opts.Batch = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Accel{root: root, opts: opts, log: opts.Logger.With("driver", "iio")}
}

// ErrNoDevice: no accelerometer matches.
var ErrNoDevice = errors.New("iio: no accelerometer found")

// Find returns the device directory the source will read.
func (a *Accel) Find() (string, error) {
	base := filepath.Join(a.root, "bus/iio/devices")
	ents, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("iio: %w", err)
	}
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "in_accel_x_raw")); err != nil {
			continue
		}
		if a.opts.Device == "" || a.opts.Device == e.Name() {
			return dir, nil
		}
		if n, err := readString(filepath.Join(dir, "name")); err == nil && n == a.opts.Device {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w under %s (device %q)", ErrNoDevice, base, a.opts.Device)
}

// axis is one channel's calibration, and its raw attribute held open: at
// 50 Hz, opening and closing three files per sample was two thirds of the
// agent's CPU (docs/benchmarks.md, footprint). sysfs regenerates an
// attribute on every read at offset 0, so one pread per sample suffices.
type axis struct {
	raw    string
	f      *os.File
	fd     int // f's descriptor, taken once
	scale  float64
	offset float64
}

func (a *Accel) axes(dir string) ([3]axis, error) {
	var ax [3]axis
	shared, sharedErr := readFloat(filepath.Join(dir, "in_accel_scale"))
	for i, n := range [3]string{"x", "y", "z"} {
		ax[i].raw = filepath.Join(dir, "in_accel_"+n+"_raw")
		s, err := readFloat(filepath.Join(dir, "in_accel_"+n+"_scale"))
		switch {
		case err == nil:
			ax[i].scale = s
		case sharedErr == nil:
			ax[i].scale = shared
		default:
			return ax, fmt.Errorf("iio: no scale for %s axis in %s", n, dir)
		}
		if o, err := readFloat(filepath.Join(dir, "in_accel_"+n+"_offset")); err == nil {
			ax[i].offset = o
		} else if o, err := readFloat(filepath.Join(dir, "in_accel_offset")); err == nil {
			ax[i].offset = o
		}
	}
	return ax, nil
}

// sample reads one sample now, without allocating.
func (a *Accel) sample(ax *[3]axis, buf *[32]byte) (kestrel.Accel, error) {
	var v [3]int32
	for i := range ax {
		// One pread: os.File.ReadAt would read again to fill the
		// buffer, a second system call per axis that only finds EOF.
		n, err := unix.Pread(ax[i].fd, buf[:], 0)
		if err != nil {
			return kestrel.Accel{}, fmt.Errorf("iio: %s: %w", ax[i].raw, err)
		}
		raw, err := parseRaw(buf[:n])
		if err != nil {
			return kestrel.Accel{}, fmt.Errorf("iio: %s: %w", ax[i].raw, err)
		}
		var ok bool
		if v[i], ok = ax[i].mm(raw); !ok {
			return kestrel.Accel{}, fmt.Errorf("iio: %s out of range", ax[i].raw)
		}
	}
	return kestrel.Accel{X: v[0], Y: v[1], Z: v[2]}, nil
}

// mm converts a raw count to mm/s², false when it does not fit.
func (x *axis) mm(raw float64) (int32, bool) {
	mm := (raw + x.offset) * x.scale * 1000
	if math.IsNaN(mm) || mm > math.MaxInt32 || mm < math.MinInt32 {
		return 0, false
	}
	return int32(math.Round(mm)), true
}

// Run samples until ctx ends (returning nil) or the device disappears.
func (a *Accel) Run(ctx context.Context, emit func(kestrel.Record)) error {
	dir, err := a.Find()
	if err != nil {
		return err
	}
	ax, err := a.axes(dir)
	if err != nil {
		return err
	}
	sf := filepath.Join(dir, "sampling_frequency")
	if _, err := os.Stat(sf); err == nil {
		if err := os.WriteFile(sf, []byte(strconv.FormatFloat(a.opts.Rate, 'f', -1, 64)), 0); err != nil {
			a.log.Debug("sampling_frequency not set", "err", err)
		}
	}
	if !a.opts.Poll {
		b, err := a.openBuffer(dir)
		if err == nil {
			defer b.close()
			a.log.Info("accelerometer, buffered", "dir", dir, "rate", a.opts.Rate, "batch", b.batch, "scan_bytes", b.layout.size)
			return a.runBuffered(ctx, b, &ax, emit)
		}
		a.log.Info("accelerometer buffer not used; polling sysfs", "reason", err)
	}
	for i := range ax {
		if ax[i].f, err = os.Open(ax[i].raw); err != nil {
			closeAxes(&ax)
			return fmt.Errorf("iio: %w", err)
		}
		ax[i].fd = int(ax[i].f.Fd())
	}
	defer closeAxes(&ax)
	var buf [32]byte
	a.log.Info("accelerometer", "dir", dir, "rate", a.opts.Rate)
	t := time.NewTicker(time.Duration(float64(time.Second) / a.opts.Rate))
	defer t.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s, err := a.sample(&ax, &buf)
		if err != nil {
			fails++
			if fails >= 10 {
				return fmt.Errorf("iio: device gone: %w", err)
			}
			continue
		}
		fails = 0
		now := a.opts.Now()
		emit(kestrel.Record{Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: a.opts.Priority}, Body: &s})
	}
}

func closeAxes(ax *[3]axis) {
	for i := range ax {
		if ax[i].f != nil {
			ax[i].f.Close()
			ax[i].f = nil
		}
	}
}

var errEmpty = errors.New("empty value")

// parseRaw reads the first token of an attribute: an integer count in
// every IIO accelerometer driver, parsed here without allocating; anything
// else goes through strconv.ParseFloat.
func parseRaw(b []byte) (float64, error) {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n') {
		b = b[1:]
	}
	end := 0
	for end < len(b) && b[end] != ' ' && b[end] != '\t' && b[end] != '\n' {
		end++
	}
	b = b[:end]
	if len(b) == 0 {
		return 0, errEmpty
	}
	if n, ok := parseInt(b); ok {
		return float64(n), nil
	}
	return strconv.ParseFloat(string(b), 64)
}

// parseInt parses an optionally signed decimal integer of up to 18 digits.
func parseInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg || b[0] == '+' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func readString(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readFloat(p string) (float64, error) {
	s, err := readString(p)
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("iio: %s: %w", p, err)
	}
	return f, nil
}
