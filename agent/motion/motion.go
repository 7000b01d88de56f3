package motion

import (
	"fmt"
	"math"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

const (
	calibration = time.Second            // samples averaged into the first gravity estimate
	smoothing   = 150 * time.Millisecond // time constant against road vibration
	quiet       = 2.0                    // m/s²: gravity is learnt only under this
	maxGap      = 500 * time.Millisecond // a longer gap between samples starts the filters again
)

// Event names (kestrel.Event.Name) for EventHarshDriving.
const (
	HarshAccel  = "harsh_accel"
	HarshBrake  = "harsh_brake"
	HarshCorner = "harsh_corner"
)

// LastFix returns the last reported fix and its time in ms, or nil.
type LastFix func() (*kestrel.Position, int64)

// Detector turns samples into events. It is safe for concurrent use:
// SetConfig may run while samples arrive.
type Detector struct {
	mu      sync.Mutex
	cfg     config.Motion
	mount   [3]config.Axis
	lastFix LastFix

	calN   int
	calSum [3]float64
	calT0  int64
	haveG  bool
	g      [3]float64 // gravity estimate, vehicle frame, m/s²
	lin    [3]float64 // smoothed linear acceleration, m/s²
	lastT  int64
	harsh  [3]harshState // accel, brake, corner
	crashT int64         // time of the last crash emergency; 0 none
}

type harshState struct {
	since int64 // ms the value first reached the threshold; 0 = under
	peak  float64
	fired bool
}

// New makes a detector. cfg must have passed config validation.
func New(cfg config.Motion, last LastFix) *Detector {
	d := &Detector{lastFix: last}
	d.SetConfig(cfg)
	return d
}

// SetConfig changes the thresholds live. The gravity estimate and the
// crash hold-off are kept; a changed mounting starts calibration again.
func (d *Detector) SetConfig(cfg config.Motion) {
	m, err := config.ParseMounting(cfg.Mounting)
	if err != nil {
		m = [3]config.Axis{{Index: 0, Sign: 1}, {Index: 1, Sign: 1}, {Index: 2, Sign: 1}}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if m != d.mount {
		d.calN, d.calSum, d.haveG = 0, [3]float64{}, false
	}
	d.cfg, d.mount = cfg, m
	d.harsh = [3]harshState{}
}

// moving is the smoothed horizontal linear acceleration that counts as
// the vehicle moving (pulling away, braking, turning): it wakes the power
// policy. Vibration on a parked vehicle stays well under it (the recorded
// drive at rest: under 0.3 m/s² smoothed).
const moving = 1.0

// Moving reports whether the last sample showed the vehicle manoeuvring.
func (d *Detector) Moving() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.haveG && math.Hypot(d.lin[0], d.lin[1]) >= moving
}

// Config returns the settings in force.
func (d *Detector) Config() config.Motion {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Gravity returns the gravity estimate in the vehicle frame (m/s²) and
// whether calibration is done.
func (d *Detector) Gravity() ([3]float64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.g, d.haveG
}

// Observe takes one sample recorded at t (ms) and emits the events it
// completes. It does not allocate unless it emits.
func (d *Detector) Observe(t int64, s *kestrel.Accel, emit func(kestrel.Record)) {
	raw := [3]float64{float64(s.X) / 1000, float64(s.Y) / 1000, float64(s.Z) / 1000}
	var v [3]float64
	d.mu.Lock()
	for i, a := range d.mount {
		v[i] = raw[a.Index] * a.Sign
	}
	if !d.haveG {
		d.calibrate(t, v)
		d.mu.Unlock()
		return
	}
	dt := time.Duration(t-d.lastT) * time.Millisecond
	d.lastT = t
	var now [3]float64
	for i := range v {
		now[i] = v[i] - d.g[i]
	}
	if dt <= 0 || dt > maxGap {
		d.lin = now
		d.harsh = [3]harshState{}
	} else {
		k := float64(dt) / float64(smoothing+dt)
		for i := range now {
			d.lin[i] += (now[i] - d.lin[i]) * k
		}
		if math.Hypot(math.Hypot(d.lin[0], d.lin[1]), d.lin[2]) < quiet {
			kg := float64(dt) / float64(d.cfg.GravityTau.Duration+dt)
			for i := range v {
				d.g[i] += (v[i] - d.g[i]) * kg
			}
		}
	}
	var out [4]kestrel.Record
	n := 0
	if th := d.cfg.Crash; th > 0 {
		if h := math.Hypot(now[0], now[1]); h >= th && (d.crashT == 0 || t-d.crashT >= d.cfg.CrashHoldoff.Milliseconds()) {
			d.crashT = t
			out[n] = d.crash(t, h, now)
			n++
		}
	}
	vals := [3]float64{d.lin[0], -d.lin[0], math.Abs(d.lin[1])}
	ths := [3]float64{d.cfg.HarshAccel, d.cfg.HarshBrake, d.cfg.HarshCorner}
	names := [3]string{HarshAccel, HarshBrake, HarshCorner}
	for i := range vals {
		if r, ok := d.harshStep(&d.harsh[i], names[i], ths[i], t, vals[i]); ok {
			out[n] = r
			n++
		}
	}
	d.mu.Unlock()
	for i := range n {
		emit(out[i])
	}
}

func (d *Detector) calibrate(t int64, v [3]float64) {
	if d.calN == 0 {
		d.calT0 = t
	}
	for i := range v {
		d.calSum[i] += v[i]
	}
	d.calN++
	if time.Duration(t-d.calT0)*time.Millisecond < calibration || d.calN < 5 {
		return
	}
	for i := range v {
		d.g[i] = d.calSum[i] / float64(d.calN)
	}
	d.haveG, d.lastT, d.lin = true, t, [3]float64{}
}

func (d *Detector) harshStep(h *harshState, name string, th float64, t int64, v float64) (kestrel.Record, bool) {
	if th <= 0 {
		return kestrel.Record{}, false
	}
	switch {
	case v >= th:
		if h.since == 0 {
			h.since, h.peak = t, 0
		}
		h.peak = max(h.peak, v)
		if !h.fired && time.Duration(t-h.since)*time.Millisecond >= d.cfg.HarshDuration.Duration {
			h.fired = true
			return kestrel.Record{
				Envelope: kestrel.Envelope{Time: t},
				Body: &kestrel.Event{Type: kestrel.EventHarshDriving, Source: "accel", Name: name,
					Value: int64(math.Round(h.peak * 1000)),
					Text:  fmt.Sprintf("%s: %.1f m/s² for %d ms", name, h.peak, t-h.since)},
			}, true
		}
	case v < th*0.75:
		*h = harshState{}
	}
	return kestrel.Record{}, false
}

func (d *Detector) crash(t int64, h float64, lin [3]float64) kestrel.Record {
	text := fmt.Sprintf("crash: %.1f g horizontal (forward %.1f, left %.1f m/s²)", h/9.80665, lin[0], lin[1])
	if d.lastFix != nil {
		if p, ft := d.lastFix(); p != nil {
			text += fmt.Sprintf("; last fix %.7f,%.7f at %s (%d s before)",
				float64(p.Lat)/1e7, float64(p.Lon)/1e7, time.UnixMilli(ft).UTC().Format(time.RFC3339Nano), (t-ft)/1000)
		} else {
			text += "; no fix yet"
		}
	}
	return kestrel.Record{
		Envelope: kestrel.Envelope{Time: t, Priority: kestrel.PriorityEmergency},
		Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "accel", Name: "crash",
			Value: int64(math.Round(h * 1000)), Text: text},
	}
}
