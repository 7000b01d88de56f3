// Package tracking is the position reporting and privacy policy: which GPS
// fixes become records, and at what precision, and which location-bearing
// fields of other records leave the device. It does no I/O and starts no
// goroutines, so that the rules can be tested record by record; the agent
// calls Tick at the deadlines it names (schedule edges, the end of an
// emergency window) and Flush to hear of privacy changes.
//
// Reporting works like Teltonika's acquisition modes, and goes further: a
// fix is reported when the time since the last reported fix reaches the
// maximum interval (a longer one while stopped), when the device has moved
// a distance, turned through an angle while moving, or changed speed, or
// at once after an event. Nothing is reported more often than the minimum
// interval, except a fix forced by an event.
//
// Privacy is enforced here, before the spool. The mode in force is the
// strictest (off < coarse < pause) of privacy.mode or the privacy
// command's override, the off-duty triggers that hold (docked, a GPIO
// line, the weekly schedule: each selects privacy.on_mode) and the privacy
// zone the last fix lies in (drop = pause, coarse). "pause" drops
// positions and blanks the cell identity and location or tracking area
// code of radio status records; "coarse" snaps positions to a grid, marks
// them (Position.Coarsened), and blanks the cell and area codes too (a
// cell locates to a few hundred metres in town, finer than the grid).
// Other records carry no location of this device and pass unchanged.
//
// Only this device's own emergency lifts privacy: the camera's button
// (firmware), a crash (the accelerometer), or a radio emergency naming
// this device's own ISSI (radio.issi, else the radio's +CNUMF). An
// emergency heard from another radio is reported, but lifts nothing.
// After an own emergency, positions and radio fields are reported in full
// precision and at every fix for tracking.emergency_window, privacy
// notwithstanding: a control room looking for an officer in trouble must
// not be handed a 1 km square.
//
// Every change of the privacy in force, and every privacy command, is
// reported as a Change (Flush), which the agent logs and sends as a
// "privacy" event.
package tracking

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/config/offduty"
)

// Privacy modes.
const (
	PrivacyOff    = "off"
	PrivacyPause  = "pause"
	PrivacyCoarse = "coarse"
)

// Strictness orders the modes: off < coarse < pause. An unknown mode reads
// as pause, the safe side.
func Strictness(mode string) int {
	switch mode {
	case PrivacyOff:
		return 0
	case PrivacyCoarse:
		return 1
	}
	return 2
}

func stricter(a, b string) string {
	if Strictness(b) > Strictness(a) {
		return b
	}
	return a
}

// Causes of a privacy change.
const (
	CauseCommand   = "command"   // the privacy command (or its override restored at start)
	CauseConfig    = "config"    // privacy.mode or a trigger's setting changed
	CauseDocked    = "docked"    // docked or undocked (privacy.docked)
	CauseGPIO      = "gpio"      // the privacy.gpio_line input changed
	CauseSchedule  = "schedule"  // a privacy.schedule edge
	CauseZone      = "zone"      // the fix entered or left a privacy zone
	CauseEmergency = "emergency" // an own emergency lifted privacy, or its window ended
)

// Change is one privacy change, for the audit.
type Change struct {
	Mode   string // in force now: off, coarse or pause (off while Lifted)
	Was    string // in force before
	Lifted bool   // an own emergency lifts privacy
	// WasLifted: the lift has ended (Was is then "off").
	WasLifted bool
	Cause     string // Cause*
	// Detail says more for the device's own log: the zone's name, the
	// emergency's source, the trigger's new state. It may locate (a zone
	// name does), so it is never sent.
	Detail string
}

// String is the audit line: "privacy pause (was off): schedule". It names
// no place.
func (c Change) String() string {
	m := "privacy " + c.Mode
	if c.Lifted {
		m = "privacy lifted"
	}
	was := c.Was
	if c.WasLifted {
		was = "lifted"
	}
	return m + " (was " + was + "): " + c.Cause
}

// maxPending bounds the changes held between Flushes.
const maxPending = 64

// Policy decides, record by record, what is reported. It is safe for
// concurrent use: the pipeline calls Filter while remote config and
// commands change the settings.
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
	emergencyNext  bool      // ... and it was an own emergency: full precision
	emergencyUntil time.Time // every fix in full until then

	// Off-duty triggers.
	ownCfg    string // radio.issi
	ownRadio  string // the identity the radio reports (+CNUMF)
	docked    bool
	line      bool
	sched     *offduty.Schedule
	schedOn   bool
	schedNext time.Time // re-read the schedule at this instant; zero: never
	zones     []*offduty.Zone
	zone      int // index into zones of the zone the last fix lay in; -1 none

	eff     string // mode in force at the last evaluation ("off" while lifted)
	lifted  bool
	started bool // eff has been evaluated once
	pending []Change
	notify  func([]Change)
	kick    chan struct{}

	seen             bool // seenLat/Lon: the last fix, reported or not
	seenLat, seenLon int32
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
	pol := &Policy{now: time.Now, zone: -1, kick: make(chan struct{}, 1)}
	pol.SetConfig(t, p)
	return pol
}

// SetClock replaces the clock used for the emergency window and the
// schedule (tests).
func (p *Policy) SetClock(now func() time.Time) {
	p.mu.Lock()
	p.now = now
	p.schedNext = time.Time{}
	if p.sched != nil {
		p.readScheduleLocked(now())
	}
	p.evaluateLocked(CauseConfig, "clock set")
	p.pending = nil
	p.mu.Unlock()
}

// Config returns the settings in force.
func (p *Policy) Config() (config.Tracking, config.Privacy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg, p.priv
}

// SetConfig changes the settings live. The last reported fix is kept, so
// the new thresholds apply from the next fix on. The config is validated
// before it gets here (agent/config); a schedule or zone that still fails
// to parse is left out and the failure is the error returned (the rest
// applies).
func (p *Policy) SetConfig(t config.Tracking, pr config.Privacy) error {
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
	var errs []error
	var sched *offduty.Schedule
	if len(pr.Schedule) > 0 {
		loc, err := time.LoadLocation(pr.TimeZone)
		if err == nil {
			sched, err = offduty.ParseSchedule(pr.Schedule, loc)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("privacy.schedule: %w", err))
		}
	}
	var zones []*offduty.Zone
	for i, zc := range pr.Zones {
		if i == offduty.MaxZones {
			errs = append(errs, fmt.Errorf("privacy.zones: more than %d", offduty.MaxZones))
			break
		}
		z, err := offduty.NewZone(zc.Name, zc.Action, zc.Polygon)
		if err != nil {
			errs = append(errs, fmt.Errorf("privacy.zones[%d]: %w", i, err))
			continue
		}
		zones = append(zones, z)
	}
	p.mu.Lock()
	p.cfg, p.priv, p.force, p.forceAll = t, pr, force, all
	p.sched, p.zones, p.zone = sched, zones, -1
	p.schedOn, p.schedNext = false, time.Time{}
	if sched != nil {
		p.readScheduleLocked(p.now())
	}
	if p.seen && len(zones) > 0 {
		p.zone = p.zoneOf(p.seenLat, p.seenLon)
	}
	p.evaluateLocked(CauseConfig, "")
	p.mu.Unlock()
	p.Kick()
	p.Deliver()
	return errors.Join(errs...)
}

// SetOwnIdentity sets radio.issi: this device's own TETRA identity. Empty:
// the identity the radio reports for itself.
func (p *Policy) SetOwnIdentity(issi string) {
	p.mu.Lock()
	p.ownCfg = issi
	p.mu.Unlock()
}

// OwnIdentity returns radio.issi as set.
func (p *Policy) OwnIdentity() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ownCfg
}

// SetPrivacy turns privacy on (privacy.on_mode), off, or back to the
// configured mode (Clear). It returns the mode now in force, which
// off-duty triggers and zones may hold stricter than the command asked.
func (p *Policy) SetPrivacy(on bool) string {
	p.mu.Lock()
	if on {
		p.override = p.onModeLocked()
	} else {
		p.override = PrivacyOff
	}
	p.commandLocked(map[bool]string{true: "on", false: "off"}[on])
	m := p.modeLocked()
	p.mu.Unlock()
	p.Deliver()
	return m
}

// ClearPrivacy drops the command's override: privacy.mode applies again.
func (p *Policy) ClearPrivacy() string {
	p.mu.Lock()
	p.override = ""
	p.commandLocked("default")
	m := p.modeLocked()
	p.mu.Unlock()
	p.Deliver()
	return m
}

// commandLocked audits a privacy command whether or not it changed the
// mode in force: the command itself is on the record.
func (p *Policy) commandLocked(arg string) {
	was := p.eff
	wasLifted := p.lifted
	if !p.evaluateLocked(CauseCommand, "mode="+arg) {
		p.addLocked(Change{Mode: p.eff, Was: was, Lifted: wasLifted, WasLifted: wasLifted, Cause: CauseCommand, Detail: "mode=" + arg})
	}
}

func (p *Policy) onModeLocked() string {
	if p.priv.OnMode == PrivacyCoarse {
		return PrivacyCoarse
	}
	return PrivacyPause // the safe reading of a bad on_mode
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
	p.evaluateLocked(CauseCommand, "restored mode "+mode)
	p.mu.Unlock()
	p.Deliver()
	return nil
}

// PrivacyMode returns the mode that privacy settings and triggers put in
// force: off, pause or coarse. An own emergency's lift is apart (Lifted).
func (p *Policy) PrivacyMode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.modeLocked()
}

// Lifted reports whether an own emergency has lifted privacy.
func (p *Policy) Lifted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.liftedLocked()
}

// modeLocked: the strictest of the mode or command, the triggers that
// hold, and the zone of the last fix.
func (p *Policy) modeLocked() string {
	m := p.priv.Mode
	if p.override != "" {
		m = p.override
	}
	if (p.priv.Docked && p.docked) || (p.priv.GPIOLine != "" && p.line) || p.schedOn {
		m = stricter(m, p.onModeLocked())
	}
	if p.zone >= 0 && p.zone < len(p.zones) {
		m = stricter(m, zoneMode(p.zones[p.zone]))
	}
	return m
}

func zoneMode(z *offduty.Zone) string {
	if z.Action == offduty.ActionCoarse {
		return PrivacyCoarse
	}
	return PrivacyPause
}

func (p *Policy) liftedLocked() bool {
	return p.emergencyNext || p.now().Before(p.emergencyUntil)
}

// effectiveLocked is what Filter applies.
func (p *Policy) effectiveLocked() (string, bool) {
	if p.liftedLocked() {
		return PrivacyOff, true
	}
	return p.modeLocked(), false
}

// evaluateLocked notes a change of what is in force, and reports whether
// there was one.
func (p *Policy) evaluateLocked(cause, detail string) bool {
	m, lifted := p.effectiveLocked()
	if !p.started {
		p.started, p.eff, p.lifted = true, m, lifted // the mode at start is no change
		return false
	}
	if m == p.eff && lifted == p.lifted {
		return false
	}
	p.addLocked(Change{Mode: m, Was: p.eff, Lifted: lifted, WasLifted: p.lifted, Cause: cause, Detail: detail})
	p.eff, p.lifted = m, lifted
	return true
}

func (p *Policy) addLocked(c Change) {
	if len(p.pending) == maxPending {
		// Nobody is flushing (a test): keep the newest.
		copy(p.pending, p.pending[1:])
		p.pending = p.pending[:maxPending-1]
	}
	p.pending = append(p.pending, c)
}

// OnChange sets who hears of privacy changes (the agent's audit). Changes
// that Filter notes wait for Deliver, so that the agent can spool the
// record that caused them first; every other method delivers at once.
func (p *Policy) OnChange(f func([]Change)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
}

// Deliver hands the changes noted so far to the OnChange function,
// outside the lock. Without one they wait for Flush.
func (p *Policy) Deliver() {
	p.mu.Lock()
	f, out := p.notify, p.pending
	if f != nil {
		p.pending = nil
	}
	p.mu.Unlock()
	if f != nil && len(out) > 0 {
		f(out)
	}
}

// Flush returns the changes noted and not delivered, oldest first.
func (p *Policy) Flush() []Change {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.pending
	p.pending = nil
	return out
}

// Kicked is signalled when the next deadline may have moved (a config
// change, an emergency): the agent's timer re-reads Deadline.
func (p *Policy) Kicked() <-chan struct{} { return p.kick }

// Kick signals Kicked.
func (p *Policy) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Deadline is when Tick next has something to do: a schedule edge or the
// end of an emergency window. false: nothing timed is pending.
func (p *Policy) Deadline() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Time
	if !p.schedNext.IsZero() {
		d = p.schedNext
	}
	if !p.emergencyUntil.IsZero() && p.now().Before(p.emergencyUntil) && (d.IsZero() || p.emergencyUntil.Before(d)) {
		d = p.emergencyUntil
	}
	return d, !d.IsZero()
}

// Tick applies what time has changed: a schedule edge, the end of an
// emergency window. Filter does the same on every record; Tick is for
// when no record comes.
func (p *Policy) Tick() {
	p.mu.Lock()
	p.tickLocked()
	p.mu.Unlock()
	p.Deliver()
}

// TickChanges is Tick, returning the changes instead of delivering them.
func (p *Policy) TickChanges() []Change {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.pending
	p.pending = nil
	p.tickLocked()
	out := p.pending
	p.pending = held
	return out
}

func (p *Policy) tickLocked() {
	now := p.now()
	if p.sched != nil && !p.schedNext.IsZero() && !now.Before(p.schedNext) {
		was := p.schedOn
		p.readScheduleLocked(now)
		if p.schedOn != was {
			p.evaluateLocked(CauseSchedule, map[bool]string{true: "off-duty period began", false: "off-duty period ended"}[p.schedOn])
			return
		}
	}
	if p.lifted && !p.liftedLocked() {
		p.evaluateLocked(CauseEmergency, "emergency window ended")
	}
}

func (p *Policy) readScheduleLocked(now time.Time) {
	p.schedOn = p.sched.Active(now)
	p.schedNext, _ = p.sched.Next(now)
}

func (p *Policy) zoneOf(lat, lon int32) int {
	found := -1
	for i, z := range p.zones {
		if z.Contains(lat, lon) {
			if z.Action == offduty.ActionDrop {
				return i // the strictest: no need to look further
			}
			if found < 0 {
				found = i
			}
		}
	}
	return found
}

// Filter reports whether rec is kept. Positions may be dropped, or
// coarsened in place; a radio status may lose its cell and area codes (to
// a copy: the driver's record is not touched); events may force the next
// fix, move a trigger or lift privacy. Every other record is kept as it
// is. The privacy changes it makes wait for Deliver or Flush.
func (p *Policy) Filter(rec *kestrel.Record) bool {
	keep, changes := p.Decide(rec)
	p.mu.Lock()
	for _, c := range changes {
		p.addLocked(c)
	}
	p.mu.Unlock()
	return keep
}

// Decide is Filter, returning the privacy changes that rec brought about
// (or that time had brought, noticed at rec): they are in force for rec
// already, so their audit belongs just ahead of it.
func (p *Policy) Decide(rec *kestrel.Record) (keep bool, changes []Change) {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.pending
	p.pending = nil
	defer func() { changes, p.pending = p.pending, held }()
	p.tickLocked()
	switch b := rec.Body.(type) {
	case *kestrel.Position:
		return p.position(rec, b), nil
	case *kestrel.RadioStatus:
		if b.Identity != "" {
			p.ownRadio = b.Identity
		}
		if m, _ := p.effectiveLocked(); m != PrivacyOff && (b.TAC != 0 || b.CellID != 0) {
			c := *b
			c.TAC, c.CellID = 0, 0
			rec.Body = &c
		}
	case *kestrel.Event:
		p.event(b)
	}
	return true, nil
}

func (p *Policy) position(rec *kestrel.Record, pos *kestrel.Position) bool {
	cur := fix{time: rec.Time, lat: pos.Lat, lon: pos.Lon, speed: pos.Speed, track: pos.Track, flags: pos.Flags}
	p.seen, p.seenLat, p.seenLon = true, pos.Lat, pos.Lon
	if len(p.zones) > 0 {
		if z := p.zoneOf(pos.Lat, pos.Lon); z != p.zone {
			detail := "left " + p.zones[max(p.zone, 0)].Name
			if z >= 0 {
				detail = "entered " + p.zones[z].Name
			}
			p.zone = z
			p.evaluateLocked(CauseZone, detail)
		}
	}
	if p.emergencyNext || p.now().Before(p.emergencyUntil) {
		p.emergencyNext, p.forceNext = false, false
		p.have, p.last = true, cur
		if !p.liftedLocked() { // window 0: that was the one fix
			p.evaluateLocked(CauseEmergency, "emergency window ended")
		}
		return true
	}
	mode := p.modeLocked()
	if mode == PrivacyPause {
		// The zone test above needs the last fix even when none is
		// reported, to tell when the device leaves.
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
	switch {
	case ev.Type == kestrel.EventEmergency && p.ownEmergency(ev):
		p.forceNext, p.emergencyNext = true, true
		if w := p.cfg.EmergencyWindow.Duration; w > 0 {
			p.emergencyUntil = p.now().Add(w)
		}
		p.evaluateLocked(CauseEmergency, "own emergency from "+ev.Source)
		p.Kick()
		return
	case ev.Type == kestrel.EventDocked || ev.Type == kestrel.EventUndocked:
		if ev.Source == "firmware" {
			p.docked = ev.Type == kestrel.EventDocked
			if p.priv.Docked {
				p.evaluateLocked(CauseDocked, ev.Type.String())
			}
		}
	case ev.Type == kestrel.EventInput && ev.Source == "gpio" && p.priv.GPIOLine != "" && ev.Name == p.priv.GPIOLine:
		p.line = ev.Value != 0
		p.evaluateLocked(CauseGPIO, fmt.Sprintf("%s=%d", ev.Name, ev.Value))
	}
	if p.forceAll || p.force[ev.Type] {
		p.forceNext = true
	}
}

// ownEmergency tells this device's own emergency from one it merely heard:
// the camera's button and the crash detector are its own; a radio
// emergency is its own only when it names this device's identity. One
// from another radio's ISSI, or from nobody (+CTXD names no party; a
// +CTSDSR may leave out the caller), lifts nothing.
func (p *Policy) ownEmergency(ev *kestrel.Event) bool {
	switch ev.Source {
	case "firmware", "accel", "agent":
		return true
	case "radio":
		own := p.ownCfg
		if own == "" {
			own = p.ownRadio
		}
		return SameRadio(ev.Name, own)
	}
	return false
}

// SameRadio reports whether two TETRA identities name one radio: equal
// after leading zeros, or, when one is a bare ISSI (at most 8 digits) and
// the other a full ITSI (MCC, MNC, then the 8-digit SSI; EN 300 392-1
// clause 7), the same SSI. Empty or non-decimal never matches.
func SameRadio(a, b string) bool {
	if !decimal(a) || !decimal(b) {
		return false
	}
	if len(a) > 8 && len(b) > 8 {
		return strings.TrimLeft(a, "0") == strings.TrimLeft(b, "0")
	}
	ssi := func(s string) string {
		if len(s) > 8 {
			s = s[len(s)-8:]
		}
		return strings.TrimLeft(s, "0")
	}
	return ssi(a) == ssi(b)
}

func decimal(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
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
