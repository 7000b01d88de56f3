package agent

import (
	"context"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/agent/power"
)

// powerApplier applies the power policy's profile: the tracking policy at
// once, the radio (whose poll is fixed per run) by a restart in a tracked
// goroutine, never from the goroutine of the source that emitted the
// record that changed the state.
type powerApplier struct {
	mu       sync.Mutex // serialises applies
	lastPoll time.Duration
}

// onPowerChange runs after each power state change.
func (a *Agent) onPowerChange(st power.State) {
	if a.closed.Load() {
		return
	}
	a.applyPowerTracking()
	a.latest.kickState()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.pw.mu.Lock()
		defer a.pw.mu.Unlock()
		cfg := a.Config()
		poll := power.RadioPoll(cfg.Power, a.power.Status().State, cfg.Radio.Poll.Duration)
		if poll == a.pw.lastPoll || cfg.Radio.Port == "" {
			a.pw.lastPoll = poll
			return
		}
		a.pw.lastPoll = poll
		a.log.Info("power state", "state", st.String(), "radio_poll", poll)
		a.restartSourcesOf("radio")(context.Background(), cfg, cfg, nil)
	}()
}

// applyPowerTracking gives the tracking policy the configured tracking as
// the power state shapes it.
func (a *Agent) applyPowerTracking() {
	cfg := a.Config()
	a.policy.SetConfig(power.Tracking(cfg.Power, a.power.Status().State, cfg.Tracking), cfg.Privacy)
}

// StateFields returns the agent's fields of the retained state message
// (power_state, ignition, battery, spool, radio, ...).
func (a *Agent) StateFields() map[string]any { return a.stateFields() }
