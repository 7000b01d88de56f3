package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// latest keeps the newest status of each part for the birth message, which
// kestrelctl status turns into the fleet table.
type latest struct {
	mu      sync.Mutex
	battery *kestrel.Battery
	radio   *kestrel.RadioStatus
	gps     *kestrel.GPSStatus
	fix     *kestrel.Position
	fixTime int64
	caps    map[string]string // capability → "ok" or why it is unavailable
	kick    chan struct{}     // a capability changed: republish the state
}

// observe keeps rec if it is a status the state message reports. For a GPS
// status it returns the one it replaces (nil the first time), so that the
// agent can log silence and recovery.
func (l *latest) observe(rec *kestrel.Record) (prevGPS *kestrel.GPSStatus) {
	switch b := rec.Body.(type) {
	case *kestrel.Battery:
		l.mu.Lock()
		l.battery = b
		l.mu.Unlock()
	case *kestrel.RadioStatus:
		l.mu.Lock()
		l.radio = b
		l.mu.Unlock()
	case *kestrel.Position:
		l.mu.Lock()
		l.fix, l.fixTime = b, rec.Time
		l.mu.Unlock()
	case *kestrel.GPSStatus:
		l.mu.Lock()
		prevGPS, l.gps = l.gps, b
		l.mu.Unlock()
	}
	return prevGPS
}

// logGPSState writes a local log line when the receiver goes silent or
// comes back: a fitter without broker access reads it in the journal.
func (a *Agent) logGPSState(prev, next *kestrel.GPSStatus) {
	was := kestrel.GPSNoData
	if prev != nil {
		was = prev.State
	}
	switch {
	case next.State == was:
	case next.State == kestrel.GPSNoData:
		a.log.Warn("gps silent: no valid NMEA sentence within the watchdog interval (cable, power, baud?)",
			"port", a.Config().GPS.Port, "sentences", next.Sentences, "bad_frames", next.BadFrames)
	case was == kestrel.GPSNoData && prev != nil:
		a.log.Info("gps data again", "port", a.Config().GPS.Port, "state", next.State.String())
	case next.State == kestrel.GPSFix:
		a.log.Info("gps fix", "mode", int(next.Mode), "sats_used", next.SatsUsed)
	case next.State == kestrel.GPSNoFix && was == kestrel.GPSFix:
		a.log.Info("gps fix lost", "sats_in_view", next.SatsInView)
	}
}

// position is the last reported fix and its time (ms).
func (l *latest) position() (*kestrel.Position, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fix, l.fixTime
}

// kickState asks for the state message to be published again.
func (l *latest) kickState() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// setCapability records whether a capability (an eBPF hook, the firmware
// socket) is available, and why not.
func (l *latest) setCapability(name, status string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.caps == nil {
		l.caps = map[string]string{}
	}
	if l.caps[name] == status {
		return
	}
	l.caps[name] = status
	l.kickState()
}

// The retained state message is republished when a meaningful field
// changes (meaningfulState), and otherwise at least every state interval
// (broker.state_interval, by default the profile's: lte 1m, narrowband
// 15m), so that the volatile counters it carries (spool depth, battery,
// signal, last fix time) are never older than that. A kick (a capability,
// privacy or power change) republishes it at once. At 1 Hz a ~700-byte
// state message every minute costs about 12 B per fix, more than the
// whole narrowband budget (docs/benchmarks.md, "Link budget of the whole
// agent"); the platform derives the last fix's age from the telemetry.

// stateCheck is how often the agent compares the state message's
// meaningful fields with the last one sent: in memory, no bytes on the
// link, so a change is on the broker within about this long.
const stateCheck = 15 * time.Second

// stateSettle is how long a kick waits for more changes before the state
// message goes: at start the capabilities, the first radio status and the
// first fix come within about 2 s, and each message costs ~300 B.
const stateSettle = 2 * time.Second

// stateInterval is the longest the state message goes unrepublished.
func (a *Agent) stateInterval() time.Duration {
	b := a.Config().Broker
	if b.StateInterval.Duration > 0 {
		return b.StateInterval.Duration
	}
	return mqtt.StateInterval(b.Profile)
}

// volatileState are the state message's fields that change all the time
// and on their own republish nothing: they ride along with the next
// message. The platform has the fix times from the telemetry, and the
// battery and radio records too.
var volatileState = map[string]bool{
	"spool_records": true, "spool_bytes": true, "spool_oldest_s": true, "spool_writes": true,
	"last_fix_ms": true, "radio_rssi": true, "battery": true,
}

// meaningfulState is the part of the state message's fields whose change
// republishes it: everything but the volatile fields, plus the battery in
// steps of 10 % and the backlog's order of magnitude from 1,000 records,
// so that a flat battery or a growing backlog still shows without a
// message per percent or per record.
func meaningfulState(f map[string]any) string {
	m := make(map[string]any, len(f))
	for k, v := range f {
		if !volatileState[k] {
			m[k] = v
		}
	}
	if b, ok := f["battery"].(int); ok {
		m["battery_step"] = b / 10
	}
	if n, ok := f["spool_records"].(int); ok {
		m["spool_backlog"] = backlogMagnitude(n)
	}
	return fmt.Sprint(m) // fmt prints maps sorted by key
}

// backlogMagnitude is 0 below 1,000 records, then the decimal order of
// magnitude (3 for thousands, 4 for tens of thousands, ...).
func backlogMagnitude(n int) int {
	if n < 1000 {
		return 0
	}
	d := 0
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// publishState keeps the retained state message current until ctx ends.
func (a *Agent) publishState(ctx context.Context) {
	check := time.NewTicker(stateCheck)
	defer check.Stop()
	// The birth message at connect carries the state: the schedule starts
	// from it.
	sent := meaningfulState(a.stateFields())
	interval, last := a.stateInterval(), time.Now()
	due := time.NewTimer(interval)
	defer due.Stop()
	for {
		publish := false
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			if iv := a.stateInterval(); iv != interval {
				// A reload changed the interval: it counts from the
				// last message.
				interval = iv
				due.Reset(max(time.Until(last.Add(iv)), 0))
			}
		case <-due.C:
			publish = true
		case <-a.latest.kick:
			// Let a burst of changes (the start-up probes: capabilities,
			// the first radio status and fix within the first second or
			// two) settle into one message.
			select {
			case <-ctx.Done():
				return
			case <-time.After(stateSettle):
			}
			for len(a.latest.kick) > 0 {
				<-a.latest.kick
			}
			publish = true
		}
		now := meaningfulState(a.stateFields())
		if !publish && now == sent {
			continue
		}
		if s := a.session(); s != nil && s.Connected() {
			if err := s.PublishState(); err != nil {
				a.log.Debug("state message not refreshed", "err", err)
			}
		}
		// Offline, the next connection's birth carries the state.
		sent, last = now, time.Now()
		due.Reset(interval)
	}
}

// radioState adds the radio's fields to the state message: profile,
// registration, technology and signal, and nothing that says where the
// device is. The cell identity and the location or tracking area code
// never go into the state message, whatever the privacy mode: in pause a
// dashboard must not place the unit by its cell (docs/topics.md).
func radioState(f map[string]any, r *kestrel.RadioStatus) {
	f["radio_profile"] = r.Profile.String()
	f["radio_registered"] = int(r.Registered)
	f["radio_rssi"] = int(r.RSSI)
	if r.AccessTech != kestrel.AccessTechUnknown {
		f["radio_act"] = int(r.AccessTech)
	}
}

// PrivacySwitch is the tracking policy's privacy switch as the fleet
// "privacy" command drives it (remote.PrivacyControl): a change of mode
// republishes the state message, whose privacy_mode the dashboard shows.
type PrivacySwitch struct {
	*tracking.Policy
	kick func()
}

// PrivacySwitch returns the agent's privacy switch for the fleet controller.
func (a *Agent) PrivacySwitch() *PrivacySwitch {
	return &PrivacySwitch{Policy: a.policy, kick: a.latest.kickState}
}

// SetPrivacy is tracking.Policy.SetPrivacy, then a state message.
func (p *PrivacySwitch) SetPrivacy(on bool) string {
	m := p.Policy.SetPrivacy(on)
	p.kick()
	return m
}

// ClearPrivacy is tracking.Policy.ClearPrivacy, then a state message.
func (p *PrivacySwitch) ClearPrivacy() string {
	m := p.Policy.ClearPrivacy()
	p.kick()
	return m
}

// RestoreOverride is tracking.Policy.RestoreOverride, then a state message.
func (p *PrivacySwitch) RestoreOverride(mode string) error {
	err := p.Policy.RestoreOverride(mode)
	p.kick()
	return err
}

// stateFields are the agent's fields in the retained state message.
func (a *Agent) stateFields() map[string]any {
	cfg := a.Config()
	m := a.spool.Metrics()
	f := map[string]any{
		"config_version": cfg.Version,
		// Membership, so kestrelctl knows a group's devices before any of
		// them has answered a config (kestrelctl config push --group).
		"groups": cfg.Device.Group,
		// The device's own key (agent/identity): the platform pins it at
		// enrolment and flags a change.
		"device_key": a.id.PublicString(),
		// Every broker connection authenticates both ends (a client
		// certificate over TLS); false where broker.require_client_cert =
		// false or the broker is on loopback.
		"mtls":           cfg.Broker.MutualTLS(),
		"spool_records":  m.Records,
		"spool_bytes":    m.Bytes,
		"spool_health":   m.Health.State.String(),
		"spool_oldest_s": int64(m.OldestAge.Seconds()),
		"spool_writes":   m.Writes,
		"spool_sealing":  m.Sealing,
		// What recovery lost at this boot's Open: counted, never silent.
		"spool_recovery_dropped_regions":  m.RecoveryDropped,
		"spool_recovery_lost_records":     m.RecoveryLostRecords,
		"spool_recovery_missing_segments": m.RecoveryMissingSegments,
		"spool_unreadable_records":        m.RecoveryUnreadable,
		// Evicted by policy since Open (the log names their seq ranges),
		// and appends refused with ErrFull.
		"spool_evicted":  m.Evicted,
		"spool_rejected": m.Rejected,
	}
	if m.Health.Err != nil {
		f["spool_error"] = m.Health.Err.Error()
	}
	if pend := a.RestartPending(); len(pend) > 0 {
		paths := make([]any, len(pend))
		for i, c := range pend {
			paths[i] = c.Path
		}
		f["restart_pending"] = paths
	}
	select {
	case <-a.startedCh: // a.started is set
		f["started_ms"] = a.started.UnixMilli()
	default:
	}
	a.latest.mu.Lock()
	defer a.latest.mu.Unlock()
	if a.latest.fix != nil {
		// When, not where: the position itself goes out only as telemetry,
		// under the privacy policy.
		f["last_fix_ms"] = a.latest.fixTime
	}
	if b := a.latest.battery; b != nil {
		f["battery"] = int(b.Capacity)
		f["battery_status"] = b.Status
	}
	ps := a.power.Status()
	f["power_state"] = ps.State.String()
	if ps.Why != "" {
		f["power_reason"] = ps.Why
	}
	if ps.Ignition >= 0 {
		f["ignition"] = ps.Ignition == 1
	}
	f["privacy_mode"] = a.policy.PrivacyMode()
	if a.opts.UpdateStatus != nil {
		f["release_seq"], f["update"] = a.opts.UpdateStatus()
	}
	if r := a.latest.radio; r != nil {
		radioState(f, r)
	}
	if g := a.latest.gps; g != nil {
		f["gps"] = g.State.String()
	}
	caps := map[string]any{}
	for k, v := range a.latest.caps {
		caps[k] = v
	}
	f["capabilities"] = caps
	return f
}
