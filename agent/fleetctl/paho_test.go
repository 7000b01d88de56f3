package fleetctl

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// pahoLink is a minimal MQTT session for tests: a paho client that
// satisfies Messenger, keeps its subscriptions across reconnects, and can
// be pointed at other broker URLs as a config change would.
type pahoLink struct {
	t      testing.TB
	fleet  string
	device string

	mu   sync.Mutex
	cl   paho.Client
	urls []string
	subs map[string]func(string, []byte)
	got  atomic.Int64 // messages delivered to handlers
}

var _ Messenger = (*pahoLink)(nil)

func newPahoLink(t testing.TB, fleet, device string, urls []string) *pahoLink {
	l := &pahoLink{t: t, fleet: fleet, device: device, subs: map[string]func(string, []byte){}}
	l.connect(urls)
	t.Cleanup(l.close)
	return l
}

func (l *pahoLink) connect(urls []string) {
	o := paho.NewClientOptions().SetClientID("test-" + l.fleet + "-" + l.device).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectTimeout(time.Second).SetKeepAlive(5 * time.Second)
	for _, u := range urls {
		o.AddBroker(u)
	}
	o.SetOnConnectHandler(func(c paho.Client) {
		l.mu.Lock()
		subs := make(map[string]func(string, []byte), len(l.subs))
		for k, v := range l.subs {
			subs[k] = v
		}
		l.mu.Unlock()
		for topic, h := range subs {
			c.Subscribe(topic, 1, wrap(h))
		}
	})
	cl := paho.NewClient(o)
	cl.Connect() // retries in the background
	l.mu.Lock()
	l.cl, l.urls = cl, urls
	l.mu.Unlock()
}

func wrap(h func(string, []byte)) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) }
}

// reconnect moves the session to other brokers: what the agent's Apply
// does when broker.urls changes.
func (l *pahoLink) reconnect(urls []string) {
	l.mu.Lock()
	old := l.cl
	l.mu.Unlock()
	old.Disconnect(0)
	l.connect(urls)
}

func (l *pahoLink) close() {
	l.mu.Lock()
	cl := l.cl
	l.mu.Unlock()
	cl.Disconnect(0)
}

func (l *pahoLink) Connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cl.IsConnectionOpen()
}

func (l *pahoLink) Publish(ctx context.Context, channel string, payload []byte, retained bool) error {
	l.mu.Lock()
	cl := l.cl
	l.mu.Unlock()
	if !cl.IsConnectionOpen() {
		return errors.New("not connected")
	}
	tok := cl.Publish("kestrel/v1/"+l.fleet+"/"+l.device+"/"+channel, 1, retained, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *pahoLink) Subscribe(topic string, h0 func(string, []byte)) error {
	h := func(t string, p []byte) { l.got.Add(1); h0(t, p) }
	l.mu.Lock()
	l.subs[topic] = h
	cl := l.cl
	l.mu.Unlock()
	if !cl.IsConnectionOpen() {
		return nil // on connect
	}
	tok := cl.Subscribe(topic, 1, wrap(h))
	if !tok.WaitTimeout(5 * time.Second) {
		return errors.New("subscribe timeout")
	}
	return tok.Error()
}

// manager is a platform-side client for tests: publishes signed configs
// and commands, like kestrelctl.
type platform struct {
	t  testing.TB
	cl paho.Client
}

func newPlatform(t testing.TB, url string) *platform {
	return newPlatformOpts(t, paho.NewClientOptions().AddBroker(url))
}

func newPlatformTLS(t testing.TB, url string, ca *broker.CA) *platform {
	return newPlatformOpts(t, paho.NewClientOptions().AddBroker(url).SetTLSConfig(ca.ClientTLS(t)))
}

func newPlatformOpts(t testing.TB, o *paho.ClientOptions) *platform {
	o.SetClientID("platform-" + strings.ReplaceAll(t.Name(), "/", "-")).SetCleanSession(true)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return &platform{t: t, cl: cl}
}

func (p *platform) publish(topic string, payload []byte, retained bool) {
	p.t.Helper()
	tok := p.cl.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		p.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (p *platform) pushConfig(priv ed25519.PrivateKey, tg fleet.Target, version uint64, body string) []byte {
	p.t.Helper()
	env, err := fleet.SignConfig(priv, tg, version, []byte(body))
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(tg.Topic(), env, true)
	return env
}

// testKey makes a deterministic fleet key.
func testKey(seed byte) (ed25519.PrivateKey, string) {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	priv := ed25519.NewKeyFromSeed(s)
	return priv, fleet.EncodePublicKey(priv.Public().(ed25519.PublicKey))
}

// deviceConfig is a valid local config for a test device.
func deviceConfig(t testing.TB, fleet, device string, url string, keys ...string) config.Config {
	t.Helper()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = device, fleet
	c.Broker.URLs = []string{url}
	c.Spool.Dir = t.TempDir()
	c.Remote.StateFile = t.TempDir() + "/remote.json"
	c.Remote.TrustedKeys = keys
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}
