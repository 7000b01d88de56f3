package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/power"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/drivers/radio"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// unit is one reloadable part of the agent: the keys it owns, what it
// checks before anything changes, and how it applies a change live. Every
// key that config.Diff calls live is owned by exactly one unit
// (TestEveryLiveKeyHasOneOwner).
type unit struct {
	name string
	// sections and keys it owns: a section owns every key under it
	// except those another unit names in keys.
	sections []string
	keys     []string
	// check runs before anything is applied; an error refuses the whole
	// change. It may prepare what apply uses (an idle broker session).
	check func(old, next config.Config, p *prepared) error
	// apply makes the change; it runs only after every check passed.
	apply func(ctx context.Context, old, next config.Config, p *prepared)
}

// prepared is what checks built for apply, and what apply found it could
// only do at restart.
type prepared struct {
	session *mqtt.Session
	restart map[string]string // key path -> why it applies at restart
}

// units lists the reloadable parts in the order they apply: policy first,
// then logging, the fleet controller's keys, the sources, and the broker
// session last (so that a bad broker change is the last thing tried and
// the controller's health check can roll it back).
func (a *Agent) units() []unit {
	return []unit{
		{name: "policy", sections: []string{"tracking", "privacy"}, keys: []string{"radio.issi"},
			apply: func(_ context.Context, _, next config.Config, _ *prepared) {
				a.policy.SetOwnIdentity(next.Radio.ISSI)
				a.policy.SetConfig(power.Tracking(next.Power, a.power.Status().State, next.Tracking), next.Privacy)
				a.latest.kickState() // privacy_mode may have changed
			}},
		{name: "power", sections: []string{"power"},
			apply: func(ctx context.Context, _, next config.Config, p *prepared) {
				a.power.SetConfig(next.Power)
				a.policy.SetConfig(power.Tracking(next.Power, a.power.Status().State, next.Tracking), next.Privacy)
				a.pw.mu.Lock()
				defer a.pw.mu.Unlock()
				if poll := power.RadioPoll(next.Power, a.power.Status().State, next.Radio.Poll.Duration); poll != a.pw.lastPoll {
					a.pw.lastPoll = poll
					a.restartSourcesOf("radio")(ctx, next, next, p)
				}
			}},
		{name: "motion", sections: []string{"motion"},
			apply: func(_ context.Context, _, next config.Config, _ *prepared) {
				a.motion.SetConfig(next.Motion)
			}},
		{name: "spool", keys: []string{"spool.max_bytes", "spool.max_age", "spool.sync_interval"},
			apply: func(_ context.Context, old, next config.Config, p *prepared) {
				s := next.Spool
				err := a.spool.SetLimits(s.MaxBytes, s.MaxAge.Duration, s.SyncInterval.Duration)
				if err == nil {
					return
				}
				// SetLimits changes all or nothing: the limits stay as
				// they were, and apply when the spool next opens.
				if !errors.Is(err, spool.ErrNeedsRestart) {
					a.log.Error("spool limits not applied live", "err", err)
				}
				changed := config.ChangedPaths(old, next)
				for _, k := range []string{"spool.max_bytes", "spool.max_age", "spool.sync_interval"} {
					if slices.Contains(changed, k) {
						p.restart[k] = err.Error()
					}
				}
			}},
		{name: "evidence", sections: []string{"evidence"},
			apply: func(_ context.Context, _, next config.Config, _ *prepared) {
				a.mu.Lock()
				a.ev.setConfig(next.Evidence)
				a.mu.Unlock()
			}},
		{name: "log", keys: []string{"log.level"},
			check: func(_, next config.Config, _ *prepared) error {
				var l slog.Level
				if err := l.UnmarshalText([]byte(next.Log.Level)); err != nil {
					return &config.FieldError{Path: "log.level", Err: fmt.Errorf("%w: %v", config.ErrInvalidValue, err)}
				}
				return nil
			},
			apply: func(_ context.Context, _, next config.Config, _ *prepared) {
				var l slog.Level
				_ = l.UnmarshalText([]byte(next.Log.Level)) // checked
				a.level.Set(l)
			}},
		// The fleet controller reads these from Config() each time it
		// uses them (trusted keys on every verification, groups on
		// every subscription pass), so they take effect once Config()
		// returns them.
		{name: "fleet", sections: []string{"remote", "update"}, keys: []string{"device.groups"}},
		{name: "gps", sections: []string{"gps"},
			check: func(old, next config.Config, _ *prepared) error {
				return portExists("gps.port", old.GPS.Port, next.GPS.Port)
			},
			apply: a.restartSourcesOf("gps")},
		{name: "radio", sections: []string{"radio"},
			check: func(old, next config.Config, _ *prepared) error {
				if _, err := radio.ParseProfile(next.Radio.Profile); err != nil {
					return &config.FieldError{Path: "radio.profile", Err: fmt.Errorf("%w: %v", config.ErrInvalidValue, err)}
				}
				return portExists("radio.port", old.Radio.Port, next.Radio.Port)
			},
			apply: a.restartSourcesOf("radio")},
		{name: "sensors", sections: []string{"sensors"}, apply: a.restartSourcesOf("sensors")},
		{name: "gpio", sections: []string{"gpio"}, apply: a.restartSourcesOf("gpio")},
		{name: "hooks", sections: []string{"hooks"}, apply: a.restartSourcesOf("hooks")},
		{name: "broker", sections: []string{"broker"}, keys: []string{"remote.max_message"},
			check: func(_, next config.Config, p *prepared) error {
				s, err := a.newSession(next)
				if err != nil {
					return &config.FieldError{Path: "broker", Err: fmt.Errorf("%w: %w", config.ErrRefused, err)}
				}
				p.session = s
				return nil
			},
			apply: func(_ context.Context, _, next config.Config, p *prepared) {
				a.replaceSession(p.session, next)
			}},
	}
}

// owner returns the unit that owns path, or nil.
func owner(units []unit, path string) *unit {
	for i := range units {
		if slices.Contains(units[i].keys, path) {
			return &units[i]
		}
	}
	sec, _, _ := strings.Cut(path, ".")
	for i := range units {
		if slices.Contains(units[i].sections, sec) {
			return &units[i]
		}
	}
	return nil
}

// portExists refuses a changed serial port that is not there: a pushed
// gps.port naming a missing device would otherwise cost the device its
// GPS until someone noticed.
func portExists(path, old, next string) error {
	if next == "" || next == old {
		return nil
	}
	if _, err := os.Stat(next); err != nil {
		return &config.FieldError{Path: path, Err: fmt.Errorf("%w: %w", config.ErrRefused, err)}
	}
	return nil
}

// restartSourcesOf restarts the sources that a section's keys configure.
func (a *Agent) restartSourcesOf(section string) func(context.Context, config.Config, config.Config, *prepared) {
	return func(_ context.Context, old, next config.Config, _ *prepared) {
		a.mu.Lock()
		runCtx := a.runCtx
		a.mu.Unlock()
		if runCtx == nil {
			return // not running yet: Run starts them from the new config
		}
		restart := map[string]bool{}
		for _, cfg := range []config.Config{old, next} {
			for _, spec := range a.buildSources(cfg) {
				if spec.section == section {
					restart[spec.name] = true
				}
			}
		}
		if len(restart) == 0 {
			return
		}
		names := make([]string, 0, len(restart))
		for n := range restart {
			names = append(names, n)
		}
		a.stopSources(names...)
		a.startSources(runCtx, next, restart)
	}
}

// Reload is the one door through which the running config changes, from
// SIGHUP and from the fleet alike. It validates next, diffs it against the
// running config and checks every part the change touches before touching
// any: a key no part can apply live, or a failed check (a serial port that
// is not there, a broker TLS file that does not load), refuses the whole
// change and nothing changes. Otherwise each live key takes effect now and
// each restart key is accepted, keeps its running value, and is listed
// with Applies == AtRestart (and in the state message) until the agent
// restarts. It returns the changes.
func (a *Agent) Reload(ctx context.Context, next config.Config) ([]config.Change, error) {
	if a.closed.Load() {
		return nil, ErrClosed
	}
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	old := a.Config()
	changes := config.Diff(old, next)
	units := a.units()

	inEffect := config.Clone(next)
	touched := map[string]bool{}
	var restartPending []config.Change
	var errs []error
	for i, c := range changes {
		switch c.Applies {
		case config.AtRestart:
			_ = config.CopyKey(&inEffect, old, c.Path)
			restartPending = append(restartPending, c)
		case config.Live:
			u := owner(units, c.Path)
			if u == nil {
				changes[i].Applies, changes[i].Reason = config.Refused, "no part of the agent applies it"
				errs = append(errs, &config.FieldError{Path: c.Path, Err: fmt.Errorf("%w: no part of the agent applies it live", config.ErrRefused)})
				continue
			}
			touched[u.name] = true
		}
	}
	if len(errs) > 0 {
		return changes, errors.Join(errs...)
	}
	p := &prepared{}
	for _, u := range units {
		if !touched[u.name] || u.check == nil {
			continue
		}
		if err := u.check(old, inEffect, p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		if p.session != nil {
			p.session.Close()
		}
		for _, fe := range config.FieldErrors(errors.Join(errs...)) {
			for i := range changes {
				if changes[i].Path == fe.Path || changes[i].Section == fe.Path {
					changes[i].Applies, changes[i].Reason = config.Refused, fe.Err.Error()
				}
			}
		}
		return changes, errors.Join(errs...)
	}

	p.restart = map[string]string{}
	a.mu.Lock()
	a.cfg = inEffect
	a.mu.Unlock()
	for _, u := range units {
		if touched[u.name] && u.apply != nil {
			u.apply(ctx, old, inEffect, p)
		}
	}
	// What a part found it could only do at restart keeps its running
	// value and is reported so.
	for i, c := range changes {
		if why, ok := p.restart[c.Path]; ok {
			changes[i].Applies, changes[i].Reason = config.AtRestart, why
			_ = config.CopyKey(&inEffect, old, c.Path)
			restartPending = append(restartPending, changes[i])
		}
	}
	a.mu.Lock()
	a.cfg = inEffect
	a.restartPending = restartPending
	a.mu.Unlock()
	if len(changes) > 0 || old.Version != next.Version {
		a.log.Info("config applied", "changes", changes, "version", next.Version)
	}
	return changes, nil
}

// RestartPending lists the accepted changes that take effect at the next
// start.
func (a *Agent) RestartPending() []config.Change {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.restartPending)
}

// replaceSession swaps the MQTT session for a prepared one. What was in
// flight on the old one goes back to the spool and is resent.
func (a *Agent) replaceSession(sess *mqtt.Session, cfg config.Config) {
	a.mu.Lock()
	old := a.sess
	a.sess = nil
	runCtx := a.runCtx
	a.mu.Unlock()
	// The old session goes first: two sessions with one client id would
	// take each other's connection over and over.
	if old != nil {
		old.stop(0, a.pending)
	}
	if runCtx == nil {
		sess.Close() // not running: Run starts a session from the config
		return
	}
	next := a.runSession(runCtx, sess, cfg)
	a.mu.Lock()
	a.sess = next
	a.mu.Unlock()
}
