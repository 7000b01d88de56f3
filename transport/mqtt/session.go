package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Session is one device's MQTT session. Create it with New, drive it with
// Run, stop it with Close or by cancelling Run's context.
type Session struct {
	opts    Options
	brokers []BrokerURL
	out     Outbox
	log     *slog.Logger
	pace    *pacer

	closeOnce sync.Once
	closed    chan struct{}
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	bg        sync.WaitGroup // connection attempts being torn down
	running   atomic.Bool
	runDone   chan struct{} // closed when Run returns (if it ran)

	mu      sync.Mutex
	client  paho.Client   // current connection, nil while down
	change  chan struct{} // closed and replaced whenever client changes
	subs    map[string]func(topic string, payload []byte)
	bdseq   uint64    // of the current (or last) connection
	broker  BrokerURL // of the current connection
	started bool

	connected atomic.Bool
	inbound   chan inboundMsg
	dropped   atomic.Uint64
	stats     Stats
}

// Stats are counters since New, for health reporting and benchmarks.
type Stats struct {
	Connects     atomic.Uint64 // successful connections
	Messages     atomic.Uint64 // data messages acknowledged (telemetry and events)
	Records      atomic.Uint64 // records committed
	Bytes        atomic.Uint64 // payload bytes of acknowledged data messages
	Released     atomic.Uint64 // records released for resending after a loss
	InboundDrops atomic.Uint64 // inbound QoS 0 messages dropped (queue full), or left unacknowledged at Close
	InboundWaits atomic.Uint64 // inbound messages that waited for room in the handler queue
	Oversize     atomic.Uint64 // inbound messages over MaxInbound, discarded unread
	LastAck      atomic.Int64  // Unix ms of the last PUBACK of a data message; 0 before the first
}

type inboundMsg struct {
	h       func(topic string, payload []byte)
	topic   string
	payload []byte
	ack     func() // sends the PUBACK (paho's, safe after the connection ends)
}

const inboundQueue = 256

// New validates the options and returns an idle session.
func New(opts Options, out Outbox) (*Session, error) {
	if out == nil {
		return nil, errors.New("mqtt options: nil outbox")
	}
	bs, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		ctx:     ctx,
		cancel:  cancel,
		opts:    opts,
		brokers: bs,
		out:     out,
		log:     opts.Logger.With("component", "mqtt", "device", opts.Device),
		pace:    &pacer{rate: opts.RateLimit},
		closed:  make(chan struct{}),
		runDone: make(chan struct{}),
		change:  make(chan struct{}),
		subs:    make(map[string]func(string, []byte)),
		inbound: make(chan inboundMsg, inboundQueue),
	}
	for _, b := range bs {
		if b.Insecure() {
			s.log.Warn("plaintext MQTT to a non-loopback broker: data and credentials travel unencrypted", "broker", b.URL)
		}
	}
	return s, nil
}

// Stats returns the session's counters.
func (s *Session) Stats() *Stats { return &s.stats }

// Connected reports whether a broker connection is up and the birth
// message has been acknowledged.
func (s *Session) Connected() bool { return s.connected.Load() }

// Run connects, retrying across the broker URLs with backoff, and drains
// the Outbox until ctx is done or Close is called. On the way out it waits
// briefly for outstanding PUBACKs, publishes the offline state and
// disconnects. It returns nil after a normal shutdown.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("mqtt session: Run called twice")
	}
	s.started = true
	s.mu.Unlock()
	select {
	case <-s.closed:
		close(s.runDone)
		return ErrClosed
	default:
	}
	s.running.Store(true)
	defer close(s.runDone)
	defer s.bg.Wait()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	})
	wg.Go(func() { s.serveInbound(ctx) })
	defer wg.Wait()

	bo := newBackoff(s.opts.BackoffMin, s.opts.BackoffMax)
	idx := 0
	first := true
	for ctx.Err() == nil {
		if !first {
			// Jitter before every reconnect, the first after a loss too.
			if !sleepCtx(ctx, bo.next()) {
				break
			}
		}
		first = false
		// One round: every URL once, starting from the last good one.
		var (
			cl   paho.Client
			lost chan struct{}
			err  error
			b    BrokerURL
		)
		for i := 0; i < len(s.brokers) && ctx.Err() == nil; i++ {
			b = s.brokers[(idx+i)%len(s.brokers)]
			cl, lost, err = s.connect(ctx, b)
			if err == nil {
				idx = (idx + i) % len(s.brokers)
				break
			}
			s.log.Warn("mqtt connect failed", "broker", b.URL, "err", err)
		}
		if cl == nil {
			continue
		}
		up := time.Now()
		s.serve(ctx, cl, lost, b)
		if time.Since(up) > s.opts.BackoffMax {
			bo.reset()
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connect builds a fresh paho client for one broker, with this
// connection's Last Will, and connects it with bounded waits.
func (s *Session) connect(ctx context.Context, b BrokerURL) (paho.Client, chan struct{}, error) {
	s.mu.Lock()
	s.bdseq++
	bdseq := s.bdseq
	s.mu.Unlock()
	will, err := stateMessage(false, s.opts.Boot, bdseq, s.opts.Version, b.Insecure(), time.Now().UnixMilli(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("encode last will: %w", err)
	}
	lost := make(chan struct{})
	var lostOnce sync.Once
	po := paho.NewClientOptions().
		AddBroker(b.URL).
		SetClientID(s.opts.ClientID).
		SetUsername(s.opts.Username).
		SetPassword(s.opts.Password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// In order, on paho's router: our handler copies onto a queue
		// and waits only when the broker sends more unacknowledged
		// messages than the queue holds (enqueue). The PUBACK goes
		// after the message's handler has run.
		SetOrderMatters(true).
		SetAutoAckDisabled(true).
		SetStore(paho.NewMemoryStore()).
		SetKeepAlive(s.opts.KeepAlive).
		SetPingTimeout(s.opts.PingTimeout).
		SetConnectTimeout(s.opts.ConnectTimeout).
		SetWriteTimeout(s.opts.AckTimeout).
		SetBinaryWill(wire.Topic(s.opts.Fleet, s.opts.Device, "state"), will, 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Warn("mqtt connection lost", "broker", b.URL, "err", err)
			lostOnce.Do(func() { close(lost) })
		})
	if s.opts.TLS != nil {
		po.SetTLSConfig(s.opts.TLS)
	}
	po.SetCustomOpenConnectionFn(s.dialLimited)
	cl := paho.NewClient(po)
	tok := cl.Connect()
	// paho bounds the dial, TLS and CONNACK by ConnectTimeout each; the
	// margin covers the goroutine hand-offs.
	if err := waitToken(ctx, tok, 2*s.opts.ConnectTimeout+time.Second); err != nil {
		// An attempt given up on may still succeed later: make sure it
		// cannot live on beside the next one under the same client id.
		s.bg.Go(func() {
			<-tok.Done() // paho bounds it by the connect timeouts
			cl.Disconnect(0)
		})
		return nil, nil, err
	}

	birth, err := s.birth(b, bdseq)
	if err != nil {
		cl.Disconnect(0)
		return nil, nil, err
	}
	if err := waitToken(ctx, cl.Publish(wire.Topic(s.opts.Fleet, s.opts.Device, "state"), 1, true, birth), s.opts.AckTimeout); err != nil {
		s.abandon(cl, b, bdseq)
		return nil, nil, fmt.Errorf("publish birth: %w", err)
	}
	s.pace.spend(time.Now(), len(birth))

	s.mu.Lock()
	subs := make(map[string]func(string, []byte), len(s.subs))
	for k, v := range s.subs {
		subs[k] = v
	}
	s.mu.Unlock()
	for f, h := range subs {
		if err := waitToken(ctx, cl.Subscribe(f, 1, s.enqueue(h)), s.opts.AckTimeout); err != nil {
			s.abandon(cl, b, bdseq)
			return nil, nil, fmt.Errorf("subscribe %s: %w", f, err)
		}
	}

	s.mu.Lock()
	s.client = cl
	s.broker = b
	close(s.change)
	s.change = make(chan struct{})
	s.mu.Unlock()
	s.connected.Store(true)
	s.stats.Connects.Add(1)
	s.log.Info("mqtt connected", "broker", b.URL, "bdseq", bdseq)
	return cl, lost, nil
}

// abandon ends a connection whose birth may have reached the broker. A
// clean DISCONNECT discards the Last Will, so the offline state is
// published first (it fails harmlessly if the link is dead, and then the
// broker publishes the will when it notices).
func (s *Session) abandon(cl paho.Client, b BrokerURL, bdseq uint64) {
	death, err := stateMessage(false, s.opts.Boot, bdseq, s.opts.Version, b.Insecure(), time.Now().UnixMilli(), nil)
	if err == nil {
		tok := cl.Publish(wire.Topic(s.opts.Fleet, s.opts.Device, "state"), 1, true, death)
		_ = waitToken(context.Background(), tok, time.Second)
	}
	cl.Disconnect(100)
}

func (s *Session) birth(b BrokerURL, bdseq uint64) ([]byte, error) {
	var extra map[string]any
	if s.opts.State != nil {
		extra = s.opts.State()
	}
	p, err := stateMessage(true, s.opts.Boot, bdseq, s.opts.Version, b.Insecure(), time.Now().UnixMilli(), extra)
	if err != nil {
		return nil, fmt.Errorf("encode birth: %w", err)
	}
	return p, nil
}

// serve drains the Outbox over one connection until it is lost or ctx is
// done, then tears it down.
func (s *Session) serve(ctx context.Context, cl paho.Client, lost chan struct{}, b BrokerURL) {
	d := newDrainer(s, cl)
	err := d.run(ctx, lost)
	s.connected.Store(false)
	s.mu.Lock()
	s.client = nil
	close(s.change)
	s.change = make(chan struct{})
	bdseq := s.bdseq
	s.mu.Unlock()

	if ctx.Err() != nil {
		// Shutdown: a clean DISCONNECT discards the Last Will, so say
		// offline ourselves first (Sparkplug does the same).
		d.settle(2 * time.Second)
		d.releaseAll()
		s.abandon(cl, b, bdseq)
		s.log.Info("mqtt session closed", "broker", b.URL)
		return
	}
	d.releaseAll()
	cl.Disconnect(0)
	s.log.Warn("mqtt connection down; reconnecting", "broker", b.URL, "err", err)
}

// waitToken waits for a paho token with a bound: never token.Wait().
func waitToken(ctx context.Context, tok paho.Token, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return ErrAckTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// current returns the live client (nil if down) and a channel closed on
// the next change.
func (s *Session) current() (paho.Client, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client, s.change
}

// Publish sends payload on a channel of this device's topic tree (e.g.
// "reply", "audit", "config/reported") at QoS 1, waiting for a connection
// and then for the PUBACK, within ctx and the ack timeout.
func (s *Session) Publish(ctx context.Context, channel string, payload []byte, retained bool) error {
	return s.publishTopic(ctx, wire.Topic(s.opts.Fleet, s.opts.Device, channel), payload, retained)
}

func (s *Session) publishTopic(ctx context.Context, topic string, payload []byte, retained bool) error {
	for {
		cl, ch := s.current()
		if cl != nil {
			p := append([]byte(nil), payload...) // paho keeps it until the PUBACK
			s.pace.spend(time.Now(), len(p))
			if err := waitToken(ctx, cl.Publish(topic, 1, retained, p), s.opts.AckTimeout); err != nil {
				return fmt.Errorf("publish %s: %w", topic, err)
			}
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w: %w", topic, ErrNotConnected, ctx.Err())
		case <-s.closed:
			return fmt.Errorf("publish %s: %w", topic, ErrClosed)
		}
	}
}

// PublishState republishes the birth message, e.g. after a config change
// altered what State returns. Offline it returns ErrNotConnected: the next
// connection's birth carries the new state anyway.
func (s *Session) PublishState() error {
	s.mu.Lock()
	b, bdseq := s.broker, s.bdseq
	s.mu.Unlock()
	p, err := s.birth(b, bdseq)
	if err != nil {
		return err
	}
	cl, _ := s.current()
	if cl == nil {
		return ErrNotConnected
	}
	s.pace.spend(time.Now(), len(p))
	if err := waitToken(s.ctx, cl.Publish(wire.Topic(s.opts.Fleet, s.opts.Device, "state"), 1, true, p), s.opts.AckTimeout); err != nil {
		return fmt.Errorf("publish state: %w", err)
	}
	return nil
}

// Subscribe registers h for an absolute topic filter (so fleet-wide and
// group topics work too). It stays subscribed across reconnects. Handlers
// run one at a time on the session's queue, never on paho's goroutines; a
// message is acknowledged once its handler has returned. If the handlers
// fall more than 256 messages behind, the session stops reading from the
// broker until they catch up (Stats.InboundWaits): a QoS 1 message is
// never lost; a QoS 0 message is then dropped (Stats.InboundDrops). A handler may Publish or Subscribe, but
// must not call Close: Close waits for the handlers' goroutine.
func (s *Session) Subscribe(topic string, h func(topic string, payload []byte)) error {
	if h == nil {
		return errors.New("subscribe: nil handler")
	}
	if topic == "" {
		return errors.New("subscribe: empty topic filter")
	}
	s.mu.Lock()
	s.subs[topic] = h
	cl := s.client
	s.mu.Unlock()
	if cl == nil {
		return nil // subscribed on the next connect
	}
	if err := waitToken(s.ctx, cl.Subscribe(topic, 1, s.enqueue(h)), s.opts.AckTimeout); err != nil {
		return fmt.Errorf("subscribe %s: %w (retried on reconnect)", topic, err)
	}
	return nil
}

// enqueue copies a message onto the session's handler queue. Its PUBACK
// goes only after its handler has returned (paho's automatic ack is off,
// MQTT 3.1.1 section 4.6 keeps the acks in order because one goroutine
// serves the queue), so a broker that limits unacknowledged messages per
// client (mosquitto's max_inflight_messages, 20 by default) holds the rest
// itself and paho's reader never waits. A broker that sends more than the
// queue holds is held back by TCP instead: enqueue waits for room (paho's
// reader waits with it) until the session ends. A QoS 1 message is never
// dropped after an ack; a QoS 0 message (at most once) is dropped when the
// queue is full, and counted.
func (s *Session) enqueue(h func(string, []byte)) paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		msg := inboundMsg{h: h, topic: m.Topic(), payload: append([]byte(nil), m.Payload()...), ack: m.Ack}
		select {
		case s.inbound <- msg:
			return
		default:
		}
		if m.Qos() == 0 {
			if s.stats.InboundDrops.Add(1)%100 == 1 {
				s.log.Warn("mqtt inbound queue full: QoS 0 message dropped", "dropped", s.stats.InboundDrops.Load())
			}
			return
		}
		if s.stats.InboundWaits.Add(1)%100 == 1 {
			s.log.Warn("mqtt inbound queue full: reading from the broker waits for the handlers", "waits", s.stats.InboundWaits.Load())
		}
		select {
		case s.inbound <- msg:
		case <-s.ctx.Done():
			// Closing: the message is not acknowledged; with a clean
			// session the broker discards it with the connection.
			s.stats.InboundDrops.Add(1)
		}
	}
}

func (s *Session) serveInbound(ctx context.Context) {
	for {
		select {
		case m := <-s.inbound:
			s.callHandler(m)
			m.ack()
		case <-ctx.Done():
			return
		}
	}
}

func (s *Session) callHandler(m inboundMsg) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("mqtt message handler panicked", "topic", m.topic, "panic", r)
		}
	}()
	m.h(m.topic, m.payload)
}

// Close stops Run (if running) and waits for it. Safe to call twice.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.cancel()
	})
	if s.running.Load() {
		<-s.runDone
	}
	return nil
}
