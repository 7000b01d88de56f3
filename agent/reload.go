package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// ErrNoConfigFile is returned by Reload when the agent was started without
// a config file to re-read.
var ErrNoConfigFile = errors.New("no config file to reload")

// Reload re-reads the config file (SIGHUP) and applies it live, or rejects
// it whole. It returns the changed key paths.
func (a *Agent) Reload(ctx context.Context) ([]string, error) {
	if a.opts.ConfigPath == "" {
		return nil, ErrNoConfigFile
	}
	local, err := config.Load(a.opts.ConfigPath, a.opts.Sets)
	if err != nil {
		return nil, err
	}
	// The remote manager lays the fleet's config over the new local one
	// and calls Apply; it also audits the reload.
	return a.mgr.Reload(ctx, local)
}

// Apply makes next the running config, reopening only what changed:
// policy first, then the drivers and hooks whose section changed, and the
// broker session last (so a bad broker change is the last thing tried and
// the connectivity watchdog in agent/remote can roll it back). It rejects
// the whole change if any key cannot change live.
func (a *Agent) Apply(ctx context.Context, next config.Config) error {
	if a.closed.Load() {
		return ErrClosed
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	old := a.Config()
	if err := config.CheckReload(old, next); err != nil {
		return err
	}
	changed := config.Diff(old, next)
	sections := map[string]bool{}
	for _, p := range changed {
		sec, _, _ := strings.Cut(p, ".")
		sections[sec] = true
	}
	a.mu.Lock()
	a.cfg = next
	runCtx := a.runCtx
	a.mu.Unlock()

	if sections["tracking"] || sections["privacy"] {
		a.policy.SetConfig(next.Tracking, next.Privacy)
	}
	if sections["motion"] {
		a.motion.SetConfig(next.Motion)
	}
	restart := map[string]bool{}
	for _, spec := range a.buildSources(next) {
		if sections[spec.section] {
			restart[spec.name] = true
		}
	}
	for _, spec := range a.buildSources(old) {
		if sections[spec.section] {
			restart[spec.name] = true
		}
	}
	if len(restart) > 0 && runCtx != nil {
		names := make([]string, 0, len(restart))
		for n := range restart {
			names = append(names, n)
		}
		a.stopSources(names...)
		a.startSources(runCtx, next, restart)
	}
	if sections["broker"] && runCtx != nil {
		if err := a.restartSession(runCtx, next); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	a.log.Info("config applied", "changed", changed, "version", next.Version)
	return nil
}

// restartSession replaces the MQTT session with one built from cfg. What
// was in flight on the old one goes back to the spool and is resent.
func (a *Agent) restartSession(ctx context.Context, cfg config.Config) error {
	sess, err := a.newSession(cfg)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.sess
	a.sess = nil
	a.mu.Unlock()
	// The old session goes first: two sessions with one client id would
	// take each other's connection over and over.
	if old != nil {
		old.stop(0, a.pending)
	}
	next := a.runSession(ctx, sess)
	a.mu.Lock()
	a.sess = next
	a.mu.Unlock()
	return nil
}
