package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// Messenger is the agent's MQTT connection as the fleet controller uses
// it: it forwards to whichever session is current, and subscribes each new
// session to every topic filter asked for so far. It is the one place
// subscriptions are kept.
func (a *Agent) Messenger() *Messenger { return a.msgr }

// Messenger survives broker-session replacement; Agent.Messenger returns it.
type Messenger struct {
	a         *Agent
	mu        sync.Mutex
	subs      map[string]func(topic string, payload []byte)
	oversized atomic.Uint64
}

// oversize counts an inbound message refused for its size (on any session).
func (m *Messenger) oversize(string, int) { m.oversized.Add(1) }

// Oversize is how many inbound messages were refused for their size since
// the agent started: the fleet controller summarises them in the audit.
func (m *Messenger) Oversize() uint64 { return m.oversized.Load() }

// Publish sends on a channel under the device's prefix at QoS 1 and
// returns after the PUBACK.
func (m *Messenger) Publish(ctx context.Context, channel string, payload []byte, retained bool) error {
	s := m.a.session()
	if s == nil {
		return mqtt.ErrNotConnected
	}
	return s.Publish(ctx, channel, payload, retained)
}

// Subscribe registers h for an absolute topic filter, on this session and
// every later one. Subscribing a filter again replaces its handler.
func (m *Messenger) Subscribe(topic string, h func(topic string, payload []byte)) error {
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

// Unsubscribe drops a topic filter, on this session and later ones.
func (m *Messenger) Unsubscribe(topic string) error {
	m.mu.Lock()
	delete(m.subs, topic)
	m.mu.Unlock()
	if s := m.a.session(); s != nil {
		return s.Unsubscribe(topic)
	}
	return nil
}

// OutboxIdle says whether the spool has no backlog: nothing has waited
// more than a few seconds for the broker. Bulk transfers (release chunks)
// wait for it, so live traffic and a draining backlog go first.
func (a *Agent) OutboxIdle() bool {
	return a.connected() && a.spool.Metrics().OldestAge < outboxIdleAge
}

// outboxIdleAge: records younger than this are live traffic on its way.
const outboxIdleAge = 10 * time.Second

// Connected reports whether a broker session is up.
func (m *Messenger) Connected() bool { return m.a.connected() }

// attach subscribes a new session to everything subscribed so far.
func (m *Messenger) attach(s *mqtt.Session) {
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

// connected reports whether a broker session is up.
func (a *Agent) connected() bool {
	s := a.session()
	return s != nil && s.Connected()
}

// Policy is the tracking and privacy policy, which the fleet controller's
// privacy command drives.
func (a *Agent) Policy() *tracking.Policy { return a.policy }

// ErrRestart is what Run returns when a fleet manager's restart command
// asked the agent to exit; the service manager starts it again.
var ErrRestart = errors.New("restart requested by command")

// RequestRestart makes Run stop and return ErrRestart.
func (a *Agent) RequestRestart() {
	a.log.Warn("restart requested by command: exiting for the service manager to restart")
	a.restartRequested.Store(true)
	a.mu.Lock()
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
}

// Command is a fleet command's handler.
type Command = func(ctx context.Context, args map[string]string) (any, error)

// Commands are the agent's handlers for signed fleet commands: locate,
// flush, status and selftest. The controller adds privacy and restart.
func (a *Agent) Commands() map[string]Command {
	return map[string]Command{
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
	}
}
