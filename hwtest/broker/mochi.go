package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// StartMochi starts an in-process mochi-mqtt broker on a free loopback
// port. It accepts any client (with TLS: any client with a certificate
// from the CA). It is closed when the test ends.
func StartMochi(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b := &Broker{t: t, kind: "mochi"}
	for _, o := range opts {
		o(&b.cfg)
	}
	m := &mochiImpl{b: b}
	b.impl = m
	var err error
	for range 5 {
		if b.addr, err = freeAddr(); err != nil {
			continue
		}
		if err = m.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start mochi broker: %v", err)
	}
	b.running = true
	t.Cleanup(b.Kill)
	return b
}

type mochiImpl struct {
	b   *Broker
	srv *mochi.Server
}

func (m *mochiImpl) start() error {
	logger := slog.New(slog.DiscardHandler)
	if m.b.cfg.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 64 * 1024
	srv := mochi.New(&mochi.Options{Logger: logger, Capabilities: caps, InlineClient: true})
	if err := srv.AddHook(&observeHook{b: m.b}, nil); err != nil {
		return err
	}
	lc := listeners.Config{ID: "tcp", Address: m.b.addr}
	if m.b.cfg.ca != nil {
		lc.TLSConfig = m.b.cfg.ca.ServerTLS(m.b.t)
	}
	if err := srv.AddListener(listeners.NewTCP(lc)); err != nil {
		return fmt.Errorf("listen on %s: %w", m.b.addr, err)
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	m.srv = srv
	return waitListening(m.b.addr, 5*time.Second, nil)
}

func (m *mochiImpl) kill() {
	if m.srv != nil {
		_ = m.srv.Close()
		m.srv = nil
	}
}

// The observe hook is installed on every (re)start and reads the broker's
// observer list, so observers live across restarts.
func (m *mochiImpl) observe(*Observer) {}

// Server is the running mochi server (nil while killed), for tests that
// want to inspect or publish directly.
func (b *Broker) Server() *mochi.Server {
	m, ok := b.impl.(*mochiImpl)
	if !ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return m.srv
}

type observeHook struct {
	mochi.HookBase
	b *Broker
}

func (h *observeHook) ID() string { return "hwtest-observer" }

func (h *observeHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnPublish, mochi.OnConnectAuthenticate, mochi.OnACLCheck}, []byte{b})
}

// The broker admits every client: with TLS, the handshake has already
// checked the client certificate. (mochi's own auth hooks pull in YAML.)
func (h *observeHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *observeHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// OnPublish runs before the broker acknowledges a QoS 1 PUBLISH.
func (h *observeHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	obs := h.b.observerList()
	for _, o := range obs {
		if Match(o.filter, pk.TopicName) {
			o.add(Message{Topic: pk.TopicName, Payload: slices.Clone(pk.Payload), Retained: pk.FixedHeader.Retain, At: time.Now()})
		}
	}
	return pk, nil
}
