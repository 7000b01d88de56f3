package battery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Options configure a battery source.
type Options struct {
	// Supply names the power_supply ("BAT0", "bq27546-0"). Empty takes
	// the first supply of type Battery.
	Supply string
	// Period between reads. Default 30 s.
	Period time.Duration
	// Heartbeat is the longest gap between records. Default 5 min.
	Heartbeat time.Duration
	// VoltageStepMV and TempStepDeciC are the changes worth a record.
	// Defaults 50 mV and 10 (1 °C).
	VoltageStepMV int32
	TempStepDeciC int16
	Logger        *slog.Logger
	Now           func() time.Time
}

// Source is one battery.
type Source struct {
	root string
	opts Options
	log  *slog.Logger
}

// ErrNoBattery: no supply of type Battery matches.
var ErrNoBattery = errors.New("battery: no battery found")

// New prepares a battery source under the sysfs root (normally "/sys").
func New(root string, opts Options) *Source {
	if opts.Period <= 0 {
		opts.Period = 30 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Minute
	}
	if opts.VoltageStepMV <= 0 {
		opts.VoltageStepMV = 50
	}
	if opts.TempStepDeciC <= 0 {
		opts.TempStepDeciC = 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Source{root: root, opts: opts, log: opts.Logger.With("driver", "battery")}
}

// Find returns the supply directory the source reads.
func (s *Source) Find() (string, error) {
	base := filepath.Join(s.root, "class/power_supply")
	ents, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("battery: %w", err)
	}
	for _, e := range ents {
		if s.opts.Supply != "" && e.Name() != s.opts.Supply {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if t, err := readString(filepath.Join(dir, "type")); err == nil && t == "Battery" {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w under %s (supply %q)", ErrNoBattery, base, s.opts.Supply)
}

// Read takes one reading of the supply in dir.
func Read(dir string) (kestrel.Battery, error) {
	var b kestrel.Battery
	c, err := readInt(filepath.Join(dir, "capacity"))
	if err != nil {
		return b, fmt.Errorf("battery: %w", err)
	}
	b.Capacity = uint8(min(max(c, 0), 100))
	if st, err := readString(filepath.Join(dir, "status")); err == nil {
		b.Status = st
	} else {
		b.Status = "Unknown"
	}
	if uv, err := readInt(filepath.Join(dir, "voltage_now")); err == nil {
		b.VoltageMV = int32((uv + 500) / 1000)
	}
	if t, err := readInt(filepath.Join(dir, "temp")); err == nil && t > -1000 && t < 2000 {
		b.TempDeciC, b.HasTemp = int16(t), true
	}
	return b, nil
}

func (s *Source) changed(a, b kestrel.Battery) bool {
	if a.Capacity != b.Capacity || a.Status != b.Status || a.HasTemp != b.HasTemp {
		return true
	}
	dv := a.VoltageMV - b.VoltageMV
	dt := a.TempDeciC - b.TempDeciC
	return abs32(dv) >= s.opts.VoltageStepMV || abs16(dt) >= s.opts.TempStepDeciC
}

// Run reads until ctx ends (returning nil). A battery that cannot be
// found at start is an error; one that stops answering is logged and
// retried, as fuel gauges on I²C do drop out for a read or two.
func (s *Source) Run(ctx context.Context, emit func(kestrel.Record)) error {
	dir, err := s.Find()
	if err != nil {
		return err
	}
	var last *kestrel.Battery
	var lastAt time.Time
	t := time.NewTicker(s.opts.Period)
	defer t.Stop()
	for {
		b, err := Read(dir)
		now := s.opts.Now()
		if err != nil {
			s.log.Warn("battery read failed", "dir", dir, "err", err)
		} else if last == nil || s.changed(b, *last) || now.Sub(lastAt) >= s.opts.Heartbeat {
			rec := b
			last, lastAt = &b, now
			emit(kestrel.Record{Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: kestrel.PriorityNormal}, Body: &rec})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func readString(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readInt(p string) (int64, error) {
	s, err := readString(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(s, 10, 64)
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

func abs16(v int16) int16 {
	if v < 0 {
		return -v
	}
	return v
}
