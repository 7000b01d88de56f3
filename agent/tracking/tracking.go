// Package tracking is the position reporting and privacy policy: which GPS
// fixes become records, and at what precision. It is pure (no I/O, no
// goroutines) so that the rules can be tested fix by fix.
//
// Reporting works like Teltonika's acquisition modes, and goes further: a
// fix is reported when the time since the last reported fix reaches the
// maximum interval (a longer one while stopped), when the device has moved
// a distance, turned through an angle while moving, or changed speed, or
// at once after an event. Nothing is reported more often than the minimum
// interval, except a fix forced by an event.
//
// Privacy is enforced here, before the spool: "pause" drops positions,
// "coarse" snaps them to a grid and marks them (Position.Coarsened). Records
// that are not positions are never touched, so events, emergencies
// included, are always reported in full. After an emergency, positions too
// are reported in full precision and at every fix for
// tracking.emergency_window, privacy notwithstanding: a control room
// looking for an officer in trouble must not be handed a 1 km square.
package tracking

import (
	"fmt"
	"math"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

// Privacy modes.
const (
	PrivacyOff    = "off"
	PrivacyPause  = "pause"
	PrivacyCoarse = "coarse"
)

// Policy decides, fix by fix, what is reported. It is safe for concurrent
// use: the pipeline calls Filter while remote config and commands change
// the settings.
type Policy struct {
	mu   sync.Mutex
	cfg  config.Tracking
	priv config.Privacy
	// override is the privacy mode set by command ("" = the configured
	// mode); it survives config changes.
	override string
	forceAll bool
	force    map[kestrel.EventType]bool
	now      func() time.Time

	have bool // last holds the last reported fix
	last fix

	forceNext      bool      // an event asked for the next fix
	emergencyNext  bool      // ... and it was an emergency: full precision
	emergencyUntil time.Time // every fix in full until then
}

type fix struct {
	time     int64 // ms
	lat, lon int32
	speed    int32 // cm/s
	track    uint16
	flags    kestrel.PosFlags
}

// New makes a policy from the tracking and privacy config.
func New(t config.Tracking, p config.Privacy) *Policy {
	pol := &Policy{now: time.Now}
	pol.SetConfig(t, p)
	return pol
}

// SetClock replaces the clock used for the emergency window (tests).
func (p *Policy) SetClock(now func() time.Time) {
	p.mu.Lock()
	p.now = now
	p.mu.Unlock()
}

// Config returns the settings in force.
func (p *Policy) Config() (config.Tracking, config.Privacy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg, p.priv
}

// SetConfig changes the settings live. The last reported fix is kept, so
// the new thresholds apply from the next fix on.
func (p *Policy) SetConfig(t config.Tracking, pr config.Privacy) {
	force := map[kestrel.EventType]bool{}
	all := false
	for _, name := range t.ForceEvents {
		if name == "all" {
			all = true
			continue
		}
		if et, err := kestrel.ParseEventType(name); err == nil {
			force[et] = true
		}
	}
	p.mu.Lock()
	p.cfg, p.priv, p.force, p.forceAll = t, pr, force, all
	p.mu.Unlock()
}

// SetPrivacy turns privacy on (privacy.on_mode), off, or back to the
// configured mode (Clear). It returns the mode now in force.
func (p *Policy) SetPrivacy(on bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.override = p.priv.OnMode
		if p.override != PrivacyCoarse {
			p.override = PrivacyPause // the safe reading of a bad on_mode
		}
	} else {
		p.override = PrivacyOff
	}
	return p.modeLocked()
}

// ClearPrivacy drops the command's override: privacy.mode applies again.
func (p *Policy) ClearPrivacy() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.override = ""
	return p.modeLocked()
}

// PrivacyOverride returns the command override: "" (none), or a mode.
func (p *Policy) PrivacyOverride() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.override
}

// RestoreOverride sets a saved override ("" = none), as PrivacyOverride
// returned it.
func (p *Policy) RestoreOverride(mode string) error {
	switch mode {
	case "", PrivacyOff, PrivacyPause, PrivacyCoarse:
	default:
		return fmt.Errorf("unknown privacy mode %q", mode)
	}
	p.mu.Lock()
	p.override = mode
	p.mu.Unlock()
	return nil
}

// PrivacyMode returns the mode in force: off, pause or coarse.
func (p *Policy) PrivacyMode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.modeLocked()
}

func (p *Policy) modeLocked() string {
	if p.override != "" {
		return p.override
	}
	return p.priv.Mode
}

// Filter reports whether rec is kept. Positions may be dropped, or
// coarsened in place; every other record is kept unchanged, and events may
// force the next fix.
func (p *Policy) Filter(rec *kestrel.Record) bool {
	pos, ok := rec.Body.(*kestrel.Position)
	if !ok {
		if ev, ok := rec.Body.(*kestrel.Event); ok {
			p.event(ev)
		}
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := fix{time: rec.Time, lat: pos.Lat, lon: pos.Lon, speed: pos.Speed, track: pos.Track, flags: pos.Flags}

	if p.emergencyNext || p.now().Before(p.emergencyUntil) {
		p.emergencyNext, p.forceNext = false, false
		p.have, p.last = true, cur
		return true
	}
	mode := p.modeLocked()
	if mode == PrivacyPause {
		return false
	}
	keep := p.forceNext || p.due(cur)
	if !keep {
		return false
	}
	p.forceNext = false
	p.have, p.last = true, cur
	if mode == PrivacyCoarse {
		Coarsen(pos, p.priv.Grid)
	}
	return true
}

func (p *Policy) event(ev *kestrel.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Type == kestrel.EventEmergency {
		p.forceNext, p.emergencyNext = true, true
		if w := p.cfg.EmergencyWindow.Duration; w > 0 {
			p.emergencyUntil = p.now().Add(w)
		}
		return
	}
	if p.forceAll || p.force[ev.Type] {
		p.forceNext = true
	}
}

// due applies the reporting triggers to a fix against the last reported one.
func (p *Policy) due(cur fix) bool {
	if !p.have {
		return true
	}
	t := &p.cfg
	dt := time.Duration(cur.time-p.last.time) * time.Millisecond
	if dt < 0 {
		return true // the receiver's clock went back (reset): start again
	}
	if dt < t.MinInterval.Duration {
		return false
	}
	bothSpeed := cur.flags&kestrel.HasSpeed != 0 && p.last.flags&kestrel.HasSpeed != 0
	stopped := t.StopSpeed > 0 && cur.flags&kestrel.HasSpeed != 0 && float64(cur.speed)/100 < t.StopSpeed
	maxI := t.MaxInterval.Duration
	if stopped && t.StopInterval.Duration > 0 {
		maxI = t.StopInterval.Duration
	}
	if maxI > 0 && dt >= maxI {
		return true
	}
	if t.Distance > 0 && Distance(p.last.lat, p.last.lon, cur.lat, cur.lon) >= t.Distance {
		return true
	}
	if t.Heading > 0 && !stopped && cur.flags&kestrel.HasTrack != 0 && p.last.flags&kestrel.HasTrack != 0 &&
		angleDiff(p.last.track, cur.track) >= t.Heading {
		return true
	}
	if t.Speed > 0 && bothSpeed && math.Abs(float64(cur.speed-p.last.speed))/100 >= t.Speed {
		return true
	}
	// With no trigger configured the policy only thins by min_interval.
	return maxI == 0 && t.Distance == 0 && t.Heading == 0 && t.Speed == 0
}

// angleDiff is the smaller angle between two tracks in centidegrees, in
// degrees.
func angleDiff(a, b uint16) float64 {
	d := math.Abs(float64(a)-float64(b)) / 100
	d = math.Mod(d, 360)
	if d > 180 {
		d = 360 - d
	}
	return d
}

const earthRadius = 6371008.8 // metres, IUGG mean radius

// Distance is the great-circle distance in metres between two points in
// 1e-7 degrees (haversine).
func Distance(lat1, lon1, lat2, lon2 int32) float64 {
	const k = math.Pi / 180 / 1e7
	φ1, φ2 := float64(lat1)*k, float64(lat2)*k
	dφ := φ2 - φ1
	dλ := (float64(lon2) - float64(lon1)) * k // in float: int32 subtraction can wrap
	s1, s2 := math.Sin(dφ/2), math.Sin(dλ/2)
	h := s1*s1 + math.Cos(φ1)*math.Cos(φ2)*s2*s2
	return 2 * earthRadius * math.Asin(math.Sqrt(math.Min(1, h)))
}

const metresPerDegree = 111319.49 // on the equator, WGS 84

// Coarsen reduces a position to a grid of about grid metres: latitude and
// longitude snap to the nearest grid point (the longitude step widens
// with latitude so cells stay square on the ground), the error estimates
// are dropped, altitude is rounded to 10 m, and Coarsened records the grid.
// A grid below 1 m leaves the position as it is.
func Coarsen(pos *kestrel.Position, grid float64) {
	if !(grid >= 1) {
		return
	}
	latStep := grid / metresPerDegree * 1e7
	lat := math.Round(float64(pos.Lat)/latStep) * latStep
	lat = math.Max(-90e7, math.Min(90e7, lat))
	cos := math.Cos(lat / 1e7 * math.Pi / 180)
	if cos < 0.01 {
		cos = 0.01
	}
	lonStep := latStep / cos
	lon := math.Round(float64(pos.Lon)/lonStep) * lonStep
	if lon > 180e7 {
		lon -= 360e7
	} else if lon < -180e7 {
		lon += 360e7
	}
	pos.Lat, pos.Lon = int32(lat), int32(math.Max(-180e7, math.Min(180e7, lon)))
	if pos.Flags&kestrel.HasAlt != 0 {
		pos.Alt = int32(math.Round(float64(pos.Alt)/1000) * 1000)
	}
	pos.EPH, pos.EPV = 0, 0
	pos.Flags &^= kestrel.HasEPH | kestrel.HasEPV
	if grid > math.MaxUint32 {
		grid = math.MaxUint32
	}
	pos.Coarsened = uint32(math.Round(grid))
}
