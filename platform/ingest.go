package platform

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Writer is what Ingest needs of a store.
type Writer interface {
	Write(ctx context.Context, b *Batch) (WriteResult, error)
}

var _ Writer = (*Store)(nil)

// IngestOptions configure Ingest. Zero values take the defaults named.
type IngestOptions struct {
	// Broker is the broker URL: tls://host:8883, or tcp:// to a loopback
	// address (or any with AllowPlaintext).
	Broker         string
	AllowPlaintext bool
	TLS            *tls.Config
	Username       string
	Password       string
	// ClientID is the persistent session's id: fixed across restarts, so
	// the broker keeps what arrives while the platform is away, and
	// different for each instance (default "kestrel-platform").
	ClientID string
	// Fleets to subscribe to (default: every fleet, "+").
	Fleets []string
	// Share, when set, subscribes the data channels as the MQTT shared
	// subscription $share/Share/..., so instances with the same Share
	// split the load.
	Share string
	// BatchMax is the most messages written in one transaction (default
	// 256); BatchWait is how long a batch waits for more messages after
	// its first (default 20ms).
	BatchMax  int
	BatchWait time.Duration
	// OnCommit, when set, is called after each commit with the rows it
	// stored (new and redelivered) and the commit time. It must not block.
	OnCommit func(rows []Row, committed time.Time)
	Metrics  *Metrics // nil: a new set
	Logger   *slog.Logger
}

// Ingest moves messages from the broker into a store, at least once: a
// message's PUBACK goes out only after the transaction holding it commits.
type Ingest struct {
	o      IngestOptions
	w      Writer
	m      *Metrics
	log    *slog.Logger
	queue  chan paho.Message
	client paho.Client

	mu        sync.Mutex
	connected bool
	closeOnce sync.Once
}

// queueSize bounds the messages received but not yet committed. The broker
// sends at most its in-flight window of unacknowledged QoS 1 messages
// (mosquitto's max_inflight_messages), so with a window below this the
// handler never blocks paho's reader (which would also stall keepalive).
const queueSize = 16384

// NewIngest checks the options; Run connects.
func NewIngest(w Writer, o IngestOptions) (*Ingest, error) {
	if o.Broker == "" {
		return nil, errors.New("ingest: a broker URL is required")
	}
	u, err := mqtt.CheckURL(o.Broker, o.AllowPlaintext)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	o.Broker = u
	if o.ClientID == "" {
		o.ClientID = "kestrel-platform"
	}
	if len(o.Fleets) == 0 {
		o.Fleets = []string{"+"}
	}
	for _, f := range o.Fleets {
		if f == "" || f != "+" && strings.ContainsAny(f, "/+#") {
			return nil, fmt.Errorf("ingest: fleet %q: a name or +", f)
		}
	}
	if strings.ContainsAny(o.Share, "/+#") {
		return nil, fmt.Errorf("ingest: share group %q must not contain / + #", o.Share)
	}
	if o.BatchMax <= 0 {
		o.BatchMax = 256
	}
	if o.BatchWait <= 0 {
		o.BatchWait = 20 * time.Millisecond
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Ingest{o: o, w: w, m: o.Metrics, log: o.Logger, queue: make(chan paho.Message, queueSize)}, nil
}

// Filters are the subscriptions: the data channels shared when Share is
// set. State is retained and brokers do not send retained messages to
// shared subscriptions, so every instance subscribes to it on its own (a
// state write is an idempotent upsert ordered by the device's time).
func (in *Ingest) Filters() map[string]byte {
	f := map[string]byte{}
	for _, fleet := range in.o.Fleets {
		for _, ch := range Channels {
			t := wire.Topic(fleet, "+", ch)
			if in.o.Share != "" && ch != ChannelState {
				t = "$share/" + in.o.Share + "/" + t
			}
			f[t] = 1
		}
	}
	return f
}

// Connected reports whether the session is up and subscribed.
func (in *Ingest) Connected() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.connected
}

// Run connects and ingests until ctx ends. Messages received but not
// committed when it returns are not acknowledged: the broker sends them
// again to the next session with the same client id.
func (in *Ingest) Run(ctx context.Context) error {
	po := paho.NewClientOptions().
		AddBroker(in.o.Broker).
		SetClientID(in.o.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetOrderMatters(true). // the handler only queues: arrival order is ack order
		SetAutoAckDisabled(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(10 * time.Second)
	if in.o.Username != "" {
		po.SetUsername(in.o.Username).SetPassword(in.o.Password)
	}
	if in.o.TLS != nil {
		po.SetTLSConfig(in.o.TLS)
	}
	filters := in.Filters()
	po.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		if earlyAck {
			m.Ack()
		}
		select {
		case in.queue <- m:
		case <-ctx.Done():
		}
	})
	po.SetOnConnectHandler(func(c paho.Client) {
		// No callback: every message goes to the default handler once,
		// whichever filter it matched.
		tok := c.SubscribeMultiple(filters, nil)
		go func() {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				in.log.Error("ingest: subscribe failed; reconnecting", "err", tok.Error())
				return
			}
			in.mu.Lock()
			in.connected = true
			in.mu.Unlock()
			in.m.connected.Set(1)
			in.log.Info("ingest: subscribed", "client_id", in.o.ClientID, "filters", len(filters))
		}()
	})
	po.SetConnectionLostHandler(func(_ paho.Client, err error) {
		in.mu.Lock()
		in.connected = false
		in.mu.Unlock()
		in.m.connected.Set(0)
		in.log.Warn("ingest: connection lost; reconnecting", "err", err)
	})
	in.client = paho.NewClient(po)
	in.client.Connect() // retried in the background
	defer in.client.Disconnect(250)
	return in.loop(ctx)
}

func (in *Ingest) loop(ctx context.Context) error {
	var msgs []paho.Message
	for {
		msgs = msgs[:0]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-in.queue:
			msgs = append(msgs, m)
		}
		timer := time.NewTimer(in.o.BatchWait)
	fill:
		for len(msgs) < in.o.BatchMax {
			select {
			case m := <-in.queue:
				msgs = append(msgs, m)
			case <-timer.C:
				break fill
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			}
		}
		timer.Stop()
		if err := in.commit(ctx, msgs); err != nil {
			return err
		}
		in.m.queue.Set(float64(len(in.queue)))
	}
}

// commit decodes and writes msgs in one transaction, retrying until it
// commits or ctx ends, then acknowledges them in arrival order.
func (in *Ingest) commit(ctx context.Context, msgs []paho.Message) error {
	var b Batch
	now := time.Now()
	for _, m := range msgs {
		_, _, ch, _ := ParseTopic(m.Topic())
		in.m.messages.WithLabelValues(channelLabel(ch)).Inc()
		if m.Duplicate() {
			in.m.redeliveries.Inc()
		}
		if err := b.Add(Message{Topic: m.Topic(), Payload: m.Payload(), Received: now}); err != nil {
			in.m.decodeFailures.Inc()
			in.log.Warn("ingest: message kept in rejected", "err", err)
		}
	}
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		res, err := in.w.Write(ctx, &b)
		if err == nil {
			committed := time.Now()
			in.m.batchSeconds.Observe(committed.Sub(start).Seconds())
			in.m.rowsInserted.Add(float64(res.Inserted))
			in.m.duplicates.Add(float64(res.Duplicates))
			in.m.keyChanges.Add(float64(res.KeyChanges))
			for _, d := range res.Flagged {
				in.log.Warn("ingest: device key is not the enrolled one: flagged, its records not trusted until it is re-enrolled (kestrelctl device show)", "device", d)
			}
			in.m.unverified.Add(float64(res.UnverifiedCheckpoints))
			for i := range b.Rows {
				in.m.lag.Observe(float64(committed.UnixMilli()-b.Rows[i].Record.Time) / 1000)
			}
			for _, m := range msgs {
				m.Ack()
			}
			if in.o.OnCommit != nil {
				in.o.OnCommit(b.Rows, committed)
			}
			return nil
		}
		in.m.writeErrors.Inc()
		if dataError(err) && len(msgs) > 1 {
			// One message the database refuses must not hold up the
			// rest: write them one by one; the refused one goes to
			// rejected.
			in.log.Warn("ingest: the database refused the batch; writing its messages one by one", "err", err)
			for _, m := range msgs {
				if err := in.commit(ctx, []paho.Message{m}); err != nil {
					return err
				}
			}
			return nil
		}
		if dataError(err) {
			in.log.Error("ingest: the database refused a message; kept in rejected", "err", err, "topic", msgs[0].Topic())
			b = Batch{Rejected: []Rejected{{Topic: cleanText(msgs[0].Topic()), Payload: msgs[0].Payload(), Err: err.Error(), Received: now}}}
			continue
		}
		in.log.Error("ingest: write failed; retrying, nothing acknowledged", "err", err, "messages", len(msgs))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func channelLabel(ch string) string {
	for _, c := range Channels {
		if c == ch {
			return c
		}
	}
	return "other"
}
