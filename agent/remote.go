package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/remote"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// messenger gives agent/remote a session that survives reloads: it
// forwards to whichever MQTT session is current and subscribes each new
// session to every topic the manager asked for.
type messenger struct {
	a    *Agent
	mu   sync.Mutex
	subs map[string]func(topic string, payload []byte)
}

var _ remote.Messenger = (*messenger)(nil)

func (m *messenger) Publish(ctx context.Context, channel string, payload []byte, retained bool) error {
	s := m.a.session()
	if s == nil {
		return mqtt.ErrNotConnected
	}
	return s.Publish(ctx, channel, payload, retained)
}

func (m *messenger) Subscribe(topic string, h func(topic string, payload []byte)) error {
	m.mu.Lock()
	if m.subs == nil {
		m.subs = map[string]func(string, []byte){}
	}
	m.subs[topic] = h
	m.mu.Unlock()
	if s := m.a.session(); s != nil {
		return s.Subscribe(topic, h)
	}
	return nil
}

// attach subscribes a new session to everything subscribed so far.
func (m *messenger) attach(s *mqtt.Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t, h := range m.subs {
		if err := s.Subscribe(t, h); err != nil {
			m.a.log.Warn("subscribe", "topic", t, "err", err)
		}
	}
}

// session is the current MQTT session, nil between sessions.
func (a *Agent) session() *mqtt.Session {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess == nil {
		return nil
	}
	return a.sess.sess
}

// connected reports whether a broker session is up: the connectivity
// watchdog in agent/remote rolls a config back when it stays false.
func (a *Agent) connected() bool {
	s := a.session()
	return s != nil && s.Connected()
}

// remoteRunner is the remote-config manager's goroutine.
type remoteRunner struct {
	mgr    *remote.Manager
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *remoteRunner) stop() {
	r.cancel()
	<-r.done
}

// newRemote builds the remote-config manager. The config it returns (the
// local config with the last applied remote config over it) is the one the
// agent starts with.
func (a *Agent) newRemote(local config.Config) (*remote.Manager, error) {
	return remote.NewManager(remote.Options{
		Current:   local,
		Apply:     func(ctx context.Context, _, next config.Config) error { return a.Apply(ctx, next) },
		Connected: a.connected,
		Commands:  a.commands(),
		Privacy:   a.policy,
		Logger:    a.log.With("part", "remote"),
	})
}

func (a *Agent) startRemote(ctx context.Context) {
	if a.mgr == nil {
		return
	}
	if err := a.mgr.Attach(a.msgr); err != nil {
		a.log.Warn("remote configuration: subscribe", "err", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &remoteRunner{mgr: a.mgr, cancel: cancel, done: make(chan struct{})}
	a.rem = r
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(r.done)
		if err := a.mgr.Run(rctx); err != nil {
			a.log.Error("remote configuration stopped", "err", err)
		}
	}()
}

// ErrRestart is what Run returns when a fleet manager's restart command
// asked the agent to exit; the service manager starts it again.
var ErrRestart = errors.New("restart requested by command")

// commands are the handlers for signed fleet commands (privacy is built
// into agent/remote).
func (a *Agent) commands() map[string]remote.CommandFunc {
	return map[string]remote.CommandFunc{
		"locate": func(ctx context.Context, _ map[string]string) (any, error) {
			a.Emit(kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventLocate, Source: "agent", Text: "locate command"}})
			res := map[string]any{"forced": true}
			if p, t := a.latest.position(); p != nil {
				res["last_fix"] = map[string]any{"time_ms": t, "lat": float64(p.Lat) / 1e7, "lon": float64(p.Lon) / 1e7}
			}
			return res, nil
		},
		"flush": func(ctx context.Context, _ map[string]string) (any, error) {
			// Flush waits (up to 10 s) for what is spooled to be
			// acknowledged by the broker, and says what is left.
			before := a.pending()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			for a.pending() > 0 && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
			return map[string]any{"pending_before": before, "pending_after": a.pending()}, nil
		},
		"status": func(ctx context.Context, _ map[string]string) (any, error) {
			return a.stateFields(), nil
		},
		"selftest": func(ctx context.Context, _ map[string]string) (any, error) {
			if a.opts.Selftest == nil {
				return nil, errors.New("selftest is not available in this build")
			}
			return a.opts.Selftest(ctx, a.Config())
		},
		"restart": func(ctx context.Context, _ map[string]string) (any, error) {
			return remote.Deferred{Result: map[string]any{"restarting": true}, Then: func() {
				a.log.Warn("restart requested by command: exiting for the service manager to restart")
				a.restartRequested.Store(true)
				a.mu.Lock()
				if a.cancel != nil {
					a.cancel()
				}
				a.mu.Unlock()
			}}, nil
		},
	}
}
