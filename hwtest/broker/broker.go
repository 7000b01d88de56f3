// Package broker starts real MQTT brokers for tests: mochi-mqtt in process
// and Debian's mosquitto as a child process, each on a free loopback port,
// optionally with mutual TLS, and able to die (Kill) and come back on the
// same port (Restart). It also offers an Observer that sees every message
// the broker accepted, across restarts, and an in-memory Outbox fake.
//
// Only tests and cmd import hwtest.
package broker

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Option configures a broker.
type Option func(*config)

type config struct {
	ca      *CA
	verbose bool
}

// WithTLS serves MQTT over TLS with the CA's server certificate and
// requires client certificates signed by the CA (mutual TLS).
func WithTLS(ca *CA) Option { return func(c *config) { c.ca = ca } }

// WithLogs shows the broker's own log in the test output.
func WithLogs() Option { return func(c *config) { c.verbose = true } }

// Broker is a running broker. Kill and Restart are safe to call from the
// test goroutine while clients are connected.
type Broker struct {
	t    testing.TB
	kind string
	cfg  config
	addr string // 127.0.0.1:port, fixed for the broker's life

	mu      sync.Mutex // serialises Kill and Restart
	running bool
	impl    impl

	obsMu     sync.Mutex // separate: brokers call observers while mu is held
	observers []*Observer
}

func (b *Broker) observerList() []*Observer {
	b.obsMu.Lock()
	defer b.obsMu.Unlock()
	return slices.Clone(b.observers)
}

type impl interface {
	start() error
	kill()
	observe(o *Observer)
}

// Kind is "mochi" or "mosquitto".
func (b *Broker) Kind() string { return b.kind }

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return b.addr }

// URL is the broker's URL: tcp:// or, with TLS, tls://.
func (b *Broker) URL() string {
	if b.cfg.ca != nil {
		return "tls://" + b.addr
	}
	return "tcp://" + b.addr
}

// Kill stops the broker at once: SIGKILL for mosquitto, closing every
// listener and connection for mochi (in-process, it cannot be killed).
// Clients see their connections drop. Nothing is saved: a restarted mochi
// starts empty; a restarted mosquitto reloads the database written when
// the last observer subscribed (observer sessions, retained messages of
// that moment), as after a real crash with periodic autosave.
func (b *Broker) Kill() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running {
		return
	}
	b.impl.kill()
	b.running = false
}

// Restart starts the broker again on the same port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		b.impl.kill()
		b.running = false
	}
	if err := b.impl.start(); err != nil {
		b.t.Fatalf("restart %s broker on %s: %v", b.kind, b.addr, err)
	}
	b.running = true
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitListening polls until addr accepts TCP connections.
func waitListening(addr string, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if alive != nil {
			if aerr := alive(); aerr != nil {
				return aerr
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker not listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Message is one PUBLISH the broker accepted.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time
}

// Observer collects every message matching a topic filter that the broker
// accepts. With mochi it sees each PUBLISH synchronously, before the
// broker's PUBACK. With mosquitto it is a raw QoS 0 subscriber with a
// persistent session saved to the broker's database, so it also gets what
// arrives while it reconnects after a Restart; mosquitto writes the
// forward to it before it acknowledges the publisher. Either way, what the
// broker acknowledged is seen (with mosquitto, a moment later: wait for
// it). Brokers clear the retain flag on forwards to existing subscribers
// (MQTT 3.1.1 section 3.3.1.3), so check retained state with a fresh
// subscription.
type Observer struct {
	filter string
	mu     sync.Mutex
	msgs   []Message
	notify chan struct{}
}

// Observe starts an observer for filter (MQTT wildcards allowed).
func (b *Broker) Observe(filter string) *Observer {
	b.t.Helper()
	o := &Observer{filter: filter, notify: make(chan struct{}, 1)}
	b.obsMu.Lock()
	b.observers = append(b.observers, o)
	b.obsMu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.impl.observe(o)
	return o
}

func (o *Observer) add(m Message) {
	o.mu.Lock()
	o.msgs = append(o.msgs, m)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// Reset forgets what was seen so far.
func (o *Observer) Reset() {
	o.mu.Lock()
	o.msgs = nil
	o.mu.Unlock()
}

// Messages returns a copy of what was seen so far, in order of arrival.
func (o *Observer) Messages() []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

// Len is the number of messages seen.
func (o *Observer) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.msgs)
}

// Wait calls done with the messages seen so far each time more arrive,
// until it returns true (Wait returns true) or timeout passes (false).
func (o *Observer) Wait(timeout time.Duration, done func([]Message) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if done(o.Messages()) {
			return true
		}
		select {
		case <-o.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return done(o.Messages())
		}
	}
}

// Match reports whether topic matches an MQTT filter.
func Match(filter, topic string) bool {
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, p := range f {
		if p == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if p != "+" && p != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
