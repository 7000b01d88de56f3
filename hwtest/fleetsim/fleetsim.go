package fleetsim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// Config of a simulated fleet.
type Config struct {
	Broker  string // tcp:// URL (loopback)
	Fleet   string
	Devices int
	// Rate is fixes per second per device (default 1).
	Rate float64
	// BatchAge is how long a telemetry batch waits (default 1s, the
	// agent's default).
	BatchAge time.Duration
	// EventEvery: every Nth record is an event on the events channel
	// (0: none).
	EventEvery int
	// Logger for the sessions (nil: discard).
	Logger *slog.Logger
}

// Device is one simulated device: its spool stand-in and its session.
type Device struct {
	ID     string
	Outbox *broker.Outbox

	cfg  *Config
	mu   sync.Mutex
	boot uint32
	seq  uint64 // last seq generated
	lat  int32
	lon  int32
	sess *mqtt.Session
	done chan struct{}
	rng  *rand.Rand
}

// Fleet is the running simulation.
type Fleet struct {
	cfg     Config
	Devices []*Device

	genCancel context.CancelFunc
	genWG     sync.WaitGroup
	generated atomic.Int64
}

// Start connects every device and starts generating.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.Rate <= 0 {
		cfg.Rate = 1
	}
	if cfg.BatchAge == 0 {
		cfg.BatchAge = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg}
	for i := range cfg.Devices {
		d := &Device{
			ID: fmt.Sprintf("sim-%05d", i), Outbox: broker.NewOutbox(), cfg: &f.cfg, boot: 1,
			lat: 515000000 + int32(i)*1000, lon: -1200000 + int32(i)*1000,
			rng: rand.New(rand.NewPCG(uint64(i), 7)),
		}
		if err := d.startSession(); err != nil {
			f.Close()
			return nil, err
		}
		f.Devices = append(f.Devices, d)
	}
	gctx, cancel := context.WithCancel(ctx)
	f.genCancel = cancel
	period := time.Duration(float64(time.Second) / cfg.Rate)
	for i, d := range f.Devices {
		f.genWG.Go(func() {
			// Spread the devices over the period, as a real fleet is.
			if !sleep(gctx, time.Duration(int64(period)*int64(i)/int64(len(f.Devices)))) {
				return
			}
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				d.generate()
				f.generated.Add(1)
				select {
				case <-gctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return f, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (d *Device) startSession() error {
	d.mu.Lock()
	boot := d.boot
	d.mu.Unlock()
	s, err := mqtt.New(mqtt.Options{
		URLs: []string{d.cfg.Broker}, Fleet: d.cfg.Fleet, Device: d.ID, Boot: boot, Version: "fleetsim",
		BatchAge: d.cfg.BatchAge, BackoffMin: 200 * time.Millisecond, BackoffMax: 3 * time.Second,
		KeepAlive: 30 * time.Second, AckTimeout: 30 * time.Second, Logger: d.cfg.Logger,
	}, d.Outbox)
	if err != nil {
		return fmt.Errorf("fleetsim %s: %w", d.ID, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(context.Background())
	}()
	d.mu.Lock()
	d.sess, d.done = s, done
	d.mu.Unlock()
	return nil
}

// generate adds the next record to the device's spool stand-in.
func (d *Device) generate() {
	d.mu.Lock()
	d.seq++
	seq, boot := d.seq, d.boot
	d.lat += int32(d.rng.IntN(201) - 100)
	d.lon += int32(d.rng.IntN(201) - 100)
	lat, lon := d.lat, d.lon
	d.mu.Unlock()
	r := kestrel.Record{Envelope: kestrel.Envelope{Device: d.ID, Boot: boot, Seq: seq, Time: time.Now().UnixMilli(), Priority: kestrel.PriorityNormal}}
	if n := d.cfg.EventEvery; n > 0 && seq%uint64(n) == 0 {
		r.Priority = kestrel.PriorityHigh
		r.Body = &kestrel.Event{Type: kestrel.EventRecordingStart, Source: "firmware", Name: "clip", Value: int64(seq)}
	} else {
		r.Body = &kestrel.Position{Lat: lat, Lon: lon, Alt: 3500 + int32(seq%100), Speed: 130, Track: uint16(seq * 37 % 36000),
			Mode: kestrel.Fix3D, Sats: 9, HDOP: 90, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP}
	}
	d.Outbox.Add(r)
}

// Restart closes the device's session and starts a new one with the next
// boot id, as a device power cycle does (its spool survives).
func (d *Device) Restart() error {
	d.mu.Lock()
	s, done := d.sess, d.done
	d.mu.Unlock()
	s.Close()
	<-done
	d.mu.Lock()
	d.boot++
	d.mu.Unlock()
	return d.startSession()
}

// Generated is the last seq the device generated (its seqs are 1..n).
func (d *Device) Generated() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seq
}

// Generated is the number of records generated so far.
func (f *Fleet) Generated() int { return int(f.generated.Load()) }

// StopGenerating ends the generators; the sessions keep draining.
func (f *Fleet) StopGenerating() {
	if f.genCancel != nil {
		f.genCancel()
	}
	f.genWG.Wait()
}

// RestartDevices restarts every device's session (new boot ids).
func (f *Fleet) RestartDevices() error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, len(f.Devices))
	for _, d := range f.Devices {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := d.Restart(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when the channel is empty
}

// WaitDrained waits until every device's spool stand-in has had all its
// records acknowledged by the broker.
func (f *Fleet) WaitDrained(ctx context.Context) error {
	for _, d := range f.Devices {
		if err := d.Outbox.WaitEmpty(ctx); err != nil {
			return fmt.Errorf("%s: %w", d.ID, err)
		}
	}
	return nil
}

// Close stops everything. Safe to call twice.
func (f *Fleet) Close() {
	f.StopGenerating()
	var wg sync.WaitGroup
	for _, d := range f.Devices {
		wg.Go(func() {
			d.mu.Lock()
			s, done := d.sess, d.done
			d.mu.Unlock()
			if s != nil {
				s.Close()
				<-done
			}
		})
	}
	wg.Wait()
}
