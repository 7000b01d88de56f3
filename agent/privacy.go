package agent

import (
	"context"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/tracking"
)

// Privacy audit: every change of the privacy in force, and every privacy
// command, is logged on the device and sent as a "privacy" event
// (kestrel.EventPrivacy; docs/privacy.md). The event says the mode and the
// cause, never the place: a zone's name stays in the device's own log.
// The fleet controller's audit chain hears the same changes through
// Options.PrivacyAudit (from afterAudits, which both paths reach).

// auditPrivacy spools the changes that the policy made outside Emit (a
// command, a config change, the privacy clock).
func (a *Agent) auditPrivacy(changes []tracking.Change) {
	a.mu.Lock()
	audits := a.spoolAuditsLocked(changes)
	a.mu.Unlock()
	a.afterAudits(changes, audits)
}

type spooledAudit struct {
	rec kestrel.Record
	err error
}

// spoolAuditsLocked spools one privacy event per change; a.mu is held.
func (a *Agent) spoolAuditsLocked(changes []tracking.Change) []spooledAudit {
	if len(changes) == 0 {
		return nil
	}
	out := make([]spooledAudit, len(changes))
	now := a.opts.Now().UnixMilli()
	for i, c := range changes {
		v := int64(tracking.Strictness(c.Mode))
		if c.Lifted {
			v = 3
		}
		rec := kestrel.Record{Envelope: kestrel.Envelope{Time: now, Priority: kestrel.PriorityHigh}, Body: &kestrel.Event{
			Type: kestrel.EventPrivacy, Source: "agent", Name: c.Cause, Value: v, Text: c.String()}}
		err := a.appendLocked(&rec)
		out[i] = spooledAudit{rec: rec, err: err}
	}
	return out
}

// afterAudits logs the changes and finishes their events, outside a.mu.
func (a *Agent) afterAudits(changes []tracking.Change, audits []spooledAudit) {
	for i, c := range changes {
		a.log.Info("privacy change", "mode", c.Mode, "was", c.Was, "lifted", c.Lifted, "cause", c.Cause, "detail", c.Detail)
		a.stats.Emitted.Add(1)
		a.afterSpool(audits[i].rec, audits[i].err)
	}
	if len(changes) > 0 {
		if a.opts.PrivacyAudit != nil {
			a.opts.PrivacyAudit(changes)
		}
		a.latest.kickState()
	}
}

// privacyClock wakes the policy at its deadlines, a schedule edge or the
// end of an emergency window, so that they take effect (and are audited)
// when no record comes. With neither pending it sleeps until kicked.
func (a *Agent) privacyClock(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		a.mu.Lock()
		changes := a.policy.TickChanges()
		audits := a.spoolAuditsLocked(changes)
		a.mu.Unlock()
		a.afterAudits(changes, audits)
		var wake <-chan time.Time
		if d, ok := a.policy.Deadline(); ok {
			// Wake at the deadline on the agent's clock, and at least
			// every 10 minutes, so a wall clock stepped meanwhile
			// costs at most that.
			wait := min(max(d.Sub(a.opts.Now()), 0)+10*time.Millisecond, 10*time.Minute)
			t.Reset(wait)
			wake = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-a.policy.Kicked():
		case <-wake:
		}
		if wake != nil && !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}
