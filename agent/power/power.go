// Package power is the power policy: how hard the agent works given the
// ignition, the battery and what is happening. It is the one place that
// decides; the agent applies its profile to the tracking policy and the
// radio poll, and drivers know nothing of it. It is pure (no I/O, no
// goroutines, an injected clock), so it is tested input by input.
//
// States:
//   - full: the configured tracking and radio poll. Ignition on, or the
//     battery above power.battery_low with no ignition line configured.
//   - reduced: ignition off or the battery at or under power.battery_low,
//     and nothing has woken the device for power.wake_hold. Positions at
//     most every power.reduced_interval, the radio polled every
//     power.reduced_radio_poll.
//   - low: reduced for power.low_power_after. Positions at most every
//     power.low_interval, the radio every power.low_radio_poll. The
//     emergency path (every record at emergency priority, the emergency
//     window of agent/tracking), the firmware socket and the spool are
//     untouched in every state.
//
// Ignition on, movement (the accelerometer) or an emergency returns to
// full at once; without ignition the device drops back after
// power.wake_hold. Transitions are evaluated when an input arrives: a
// running agent always has some (the battery and thermal pollers at the
// least), so no timer of its own is needed.
package power

import (
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

// State is the power state.
type State int

const (
	Full State = iota
	Reduced
	Low
)

func (s State) String() string {
	return [...]string{"full", "reduced", "low"}[s]
}

// Policy is the power state machine. Safe for concurrent use.
type Policy struct {
	mu        sync.Mutex
	cfg       config.Power
	now       func() time.Time
	state     State
	since     time.Time // when the state was entered
	ignition  int       // -1 unknown, 0 off, 1 on
	battery   int       // percent; -1 unknown
	lastWake  time.Time
	wakeWhy   string
	onChanged func(State)
}

// New makes a policy. onChanged runs (outside the lock) after each state
// change; it must not block.
func New(cfg config.Power, now func() time.Time, onChanged func(State)) *Policy {
	if now == nil {
		now = time.Now
	}
	return &Policy{cfg: cfg, now: now, since: now(), ignition: -1, battery: -1, onChanged: onChanged}
}

// SetConfig changes the settings live and re-evaluates the state.
func (p *Policy) SetConfig(cfg config.Power) {
	p.mu.Lock()
	p.cfg = cfg
	ch, st := p.evalLocked()
	p.mu.Unlock()
	p.notify(ch, st)
}

// Status is the policy's view for the state message.
type Status struct {
	State    State
	Ignition int // -1 unknown, 0 off, 1 on
	Battery  int // percent, -1 unknown
	Why      string
}

// Status returns the current state and inputs.
func (p *Policy) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{State: p.state, Ignition: p.ignition, Battery: p.battery, Why: p.whyLocked()}
}

// Observe takes a record on its way into the pipeline.
func (p *Policy) Observe(rec *kestrel.Record) {
	switch b := rec.Body.(type) {
	case *kestrel.Event:
		switch {
		case b.Type == kestrel.EventInput && p.isIgnition(b.Name):
			p.set(func() { p.ignition = int(min(max(b.Value, 0), 1)) })
			if b.Value != 0 {
				p.Wake("ignition")
			}
			return
		case b.Type == kestrel.EventEmergency:
			p.Wake("emergency")
			return
		}
	case *kestrel.Battery:
		p.set(func() { p.battery = int(b.Capacity) })
		return
	}
	p.set(func() {})
}

func (p *Policy) isIgnition(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.IgnitionLine != "" && name == p.cfg.IgnitionLine
}

// Wake brings full reporting back at once (movement, an emergency).
func (p *Policy) Wake(why string) {
	p.set(func() { p.lastWake, p.wakeWhy = p.now(), why })
}

func (p *Policy) set(f func()) {
	p.mu.Lock()
	f()
	ch, st := p.evalLocked()
	p.mu.Unlock()
	p.notify(ch, st)
}

func (p *Policy) notify(changed bool, st State) {
	if changed && p.onChanged != nil {
		p.onChanged(st)
	}
}

// saving reports whether the inputs ask to save power.
func (p *Policy) savingLocked() bool {
	c := p.cfg
	if c.IgnitionLine != "" && p.ignition == 0 {
		return true
	}
	return c.BatteryLow > 0 && p.battery >= 0 && p.battery <= c.BatteryLow
}

func (p *Policy) whyLocked() string {
	switch {
	case p.state == Full && !p.lastWake.IsZero() && p.savingLocked():
		return "woken: " + p.wakeWhy
	case p.cfg.IgnitionLine != "" && p.ignition == 0:
		return "ignition off"
	case p.cfg.BatteryLow > 0 && p.battery >= 0 && p.battery <= p.cfg.BatteryLow:
		return "battery low"
	}
	return ""
}

func (p *Policy) evalLocked() (bool, State) {
	now := p.now()
	next := Full
	woken := !p.lastWake.IsZero() && now.Sub(p.lastWake) < p.cfg.WakeHold.Duration
	if p.savingLocked() && !woken {
		next = Reduced
		after := p.cfg.LowPowerAfter.Duration
		if p.state == Low || (p.state == Reduced && after > 0 && now.Sub(p.since) >= after) {
			next = Low
		}
	}
	if next == p.state {
		return false, next
	}
	p.since = now
	p.state = next
	return true, next
}

// Tracking returns the tracking settings for the state: the configured
// ones in full, time-only reporting at the state's interval otherwise.
func Tracking(cfg config.Power, st State, base config.Tracking) config.Tracking {
	var every time.Duration
	switch st {
	case Reduced:
		every = cfg.ReducedInterval.Duration
	case Low:
		every = cfg.LowInterval.Duration
	default:
		return base
	}
	t := base
	t.MinInterval, t.MaxInterval, t.StopInterval = config.D(every), config.D(every), config.D(every)
	t.Distance, t.Heading, t.Speed = 0, 0, 0
	return t
}

// RadioPoll returns the radio poll interval for the state.
func RadioPoll(cfg config.Power, st State, base time.Duration) time.Duration {
	switch st {
	case Reduced:
		return max(base, cfg.ReducedRadioPoll.Duration)
	case Low:
		return max(base, cfg.LowRadioPoll.Duration)
	}
	return base
}

// Config returns the settings in force.
func (p *Policy) Config() config.Power {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}
