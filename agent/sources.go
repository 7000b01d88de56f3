package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

// Source is anything that produces records until its context ends: a
// driver on an open port, a sysfs poller, a firmware hook.
type Source interface {
	Run(ctx context.Context, emit func(kestrel.Record)) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, emit func(kestrel.Record)) error

func (f SourceFunc) Run(ctx context.Context, emit func(kestrel.Record)) error { return f(ctx, emit) }

// runningSource is one source under the agent's supervision.
type runningSource struct {
	name   string
	cfg    config.Config // what it was built from
	cancel context.CancelFunc
	done   chan struct{}
}

// sourceSpec names a source and the config section whose change restarts it.
type sourceSpec struct {
	name    string
	section string
	src     Source
}

// startSources starts the sources that cfg enables. With only set, it
// starts just those names (a reload restarting what changed).
func (a *Agent) startSources(ctx context.Context, cfg config.Config, only map[string]bool) {
	for _, spec := range a.buildSources(cfg) {
		if only != nil && !only[spec.name] {
			continue
		}
		a.startSource(ctx, spec, cfg)
	}
}

func (a *Agent) startSource(ctx context.Context, spec sourceSpec, cfg config.Config) {
	sctx, cancel := context.WithCancel(ctx)
	rs := &runningSource{name: spec.name, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.srcs[spec.name] = rs
	a.mu.Unlock()
	log := a.log.With("part", spec.name)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(rs.done)
		// A source that fails is restarted with capped exponential
		// backoff and full jitter; one that runs for a while resets it.
		delay := time.Second
		for {
			started := time.Now()
			err := spec.src.Run(sctx, a.Emit)
			if sctx.Err() != nil {
				return
			}
			if time.Since(started) > time.Minute {
				delay = time.Second
			}
			if err == nil {
				err = errors.New("stopped")
			}
			wait := time.Duration(rand.Int64N(int64(delay))) + 100*time.Millisecond
			log.Warn("source failed; restarting", "err", err, "in", wait.Round(time.Millisecond))
			select {
			case <-sctx.Done():
				return
			case <-time.After(wait):
			}
			delay = min(delay*2, 2*time.Minute)
		}
	}()
}

// stopSources stops every source (or just the named ones) and waits.
func (a *Agent) stopSources(names ...string) {
	a.mu.Lock()
	var stopping []*runningSource
	for name, rs := range a.srcs {
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		stopping = append(stopping, rs)
		delete(a.srcs, name)
	}
	a.mu.Unlock()
	for _, rs := range stopping {
		rs.cancel()
	}
	for _, rs := range stopping {
		<-rs.done
	}
}
