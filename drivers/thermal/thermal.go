package thermal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Options configure a thermal source.
type Options struct {
	// Zones limits the source to zones of these types ("cpu-thermal") or
	// directory names ("thermal_zone0"). Empty reads all.
	Zones []string
	// Period between reads. Default 30 s.
	Period time.Duration
	// Heartbeat is the longest gap between records of a zone. Default 5 min.
	Heartbeat time.Duration
	// HysteresisMilliC is the change worth a record. Default 1000 (1 °C).
	HysteresisMilliC int32
	Logger           *slog.Logger
	Now              func() time.Time
}

// Source reads thermal zones.
type Source struct {
	root string
	opts Options
	log  *slog.Logger
}

// ErrNoZone: no thermal zone matches.
var ErrNoZone = errors.New("thermal: no thermal zone found")

// New prepares a thermal source under the sysfs root (normally "/sys").
func New(root string, opts Options) *Source {
	if opts.Period <= 0 {
		opts.Period = 30 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Minute
	}
	if opts.HysteresisMilliC <= 0 {
		opts.HysteresisMilliC = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Source{root: root, opts: opts, log: opts.Logger.With("driver", "thermal")}
}

type zone struct {
	dir    string
	name   string
	last   int32
	lastAt time.Time
	seen   bool
}

// zones lists the zones the source reads, in directory order.
func (s *Source) zones() ([]*zone, error) {
	base := filepath.Join(s.root, "class/thermal")
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("thermal: %w", err)
	}
	var out []*zone
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "thermal_zone") {
			continue // cooling_deviceN
		}
		dir := filepath.Join(base, e.Name())
		name := e.Name()
		if t, err := os.ReadFile(filepath.Join(dir, "type")); err == nil && strings.TrimSpace(string(t)) != "" {
			name = strings.TrimSpace(string(t))
		}
		if len(s.opts.Zones) > 0 && !slices.Contains(s.opts.Zones, name) && !slices.Contains(s.opts.Zones, e.Name()) {
			continue
		}
		out = append(out, &zone{dir: dir, name: name})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w under %s", ErrNoZone, base)
	}
	return out, nil
}

func readTemp(dir string) (int32, error) {
	b, err := os.ReadFile(filepath.Join(dir, "temp"))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("thermal: %s: %w", dir, err)
	}
	return int32(v), nil
}

// Run reads until ctx ends (returning nil).
func (s *Source) Run(ctx context.Context, emit func(kestrel.Record)) error {
	zs, err := s.zones()
	if err != nil {
		return err
	}
	t := time.NewTicker(s.opts.Period)
	defer t.Stop()
	for {
		now := s.opts.Now()
		for _, z := range zs {
			v, err := readTemp(z.dir)
			if err != nil {
				// Some zones (a sensor behind a powered-down bus) fail
				// reads with EAGAIN or ENODATA for a while.
				s.log.Debug("thermal read failed", "zone", z.name, "err", err)
				continue
			}
			d := v - z.last
			if d < 0 {
				d = -d
			}
			if !z.seen || d >= s.opts.HysteresisMilliC || now.Sub(z.lastAt) >= s.opts.Heartbeat {
				z.seen, z.last, z.lastAt = true, v, now
				emit(kestrel.Record{
					Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: kestrel.PriorityNormal},
					Body:     &kestrel.Thermal{Zone: z.name, MilliC: v},
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
