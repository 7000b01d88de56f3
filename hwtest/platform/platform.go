// Package platform is the command platform's side of the wire, for tests,
// scenarios and the demo: it subscribes to a fleet's data channels on a real
// broker, decodes every batch, deduplicates on (device, boot, seq) as the
// platform does, and reports gaps.
package platform

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Key identifies a record across the fleet.
type Key struct {
	Device string
	Boot   uint32
	Seq    uint64
}

// Arrival is one decoded record and when it arrived.
type Arrival struct {
	Record  kestrel.Record
	Topic   string
	Arrived time.Time
	// Duplicate is set for a record already seen (at-least-once delivery).
	Duplicate bool
}

// Options for Subscribe.
type Options struct {
	URL      string
	Fleet    string // "+" or empty for every fleet
	Device   string // "+" or empty for every device
	TLS      *tls.Config
	ClientID string
	// OnArrival, when set, is called for every decoded record in arrival
	// order, duplicates included. It must not block for long.
	OnArrival func(Arrival)
}

// Platform collects what arrives.
type Platform struct {
	client paho.Client
	opts   Options

	mu       sync.Mutex
	seen     map[Key]struct{}
	unique   []Arrival
	dups     int
	messages int
	bytes    int
	errs     []error
	changed  chan struct{}
}

// Subscribe connects to the broker and subscribes to telemetry and events.
func Subscribe(ctx context.Context, o Options) (*Platform, error) {
	if o.Fleet == "" {
		o.Fleet = "+"
	}
	if o.Device == "" {
		o.Device = "+"
	}
	if o.ClientID == "" {
		o.ClientID = fmt.Sprintf("kestrel-platform-%d", time.Now().UnixNano())
	}
	p := &Platform{opts: o, seen: map[Key]struct{}{}, changed: make(chan struct{})}
	co := paho.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOrderMatters(false)
	if o.TLS != nil {
		co.SetTLSConfig(o.TLS)
	}
	topics := map[string]byte{
		wire.Topic(o.Fleet, o.Device, "telemetry"): 1,
		wire.Topic(o.Fleet, o.Device, "events"):    1,
	}
	co.SetOnConnectHandler(func(c paho.Client) {
		c.SubscribeMultiple(topics, p.handle)
	})
	p.client = paho.NewClient(co)
	tok := p.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("platform connect %s: %w", o.URL, err)
		}
	case <-ctx.Done():
		p.client.Disconnect(0)
		return nil, ctx.Err()
	}
	// Wait for the subscription, so nothing published after Subscribe
	// returns is missed.
	st := p.client.SubscribeMultiple(topics, p.handle)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		p.client.Disconnect(0)
		return nil, fmt.Errorf("platform subscribe: %v", errors.Join(st.Error(), errors.New("timeout or refused")))
	}
	return p, nil
}

func (p *Platform) handle(_ paho.Client, m paho.Message) {
	p.Add(m.Topic(), m.Payload(), time.Now())
}

// Collect makes a Platform that is fed by Add instead of a subscription:
// for messages a test saw some other way (a broker's observer).
func Collect(onArrival func(Arrival)) *Platform {
	return &Platform{opts: Options{OnArrival: onArrival}, seen: map[Key]struct{}{}, changed: make(chan struct{})}
}

// Add decodes one data message as if it had arrived at the given time.
func (p *Platform) Add(topic string, payload []byte, at time.Time) {
	recs, err := wire.DecodeBatchTopic(topic, payload)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.messages++
	p.bytes += len(payload)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s: %w", topic, err))
		return
	}
	for _, r := range recs {
		a := Arrival{Record: r, Topic: topic, Arrived: at}
		k := Key{r.Device, r.Boot, r.Seq}
		if _, dup := p.seen[k]; dup {
			a.Duplicate = true
			p.dups++
		} else {
			p.seen[k] = struct{}{}
			p.unique = append(p.unique, a)
		}
		if p.opts.OnArrival != nil {
			p.opts.OnArrival(a)
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Close disconnects. Safe to call twice.
func (p *Platform) Close() {
	if p.client != nil && p.client.IsConnected() {
		p.client.Disconnect(100)
	}
}

// Unique returns every distinct record received, in arrival order.
func (p *Platform) Unique() []Arrival {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Arrival(nil), p.unique...)
}

// Counts returns the distinct records, duplicates, messages and payload
// bytes received.
func (p *Platform) Counts() (unique, dups, messages, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.unique), p.dups, p.messages, p.bytes
}

// Errors returns payloads that did not decode.
func (p *Platform) Errors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

// Has reports whether the record was received.
func (p *Platform) Has(k Key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.seen[k]
	return ok
}

// WaitFor blocks until cond holds (checked after every message) or ctx ends.
func (p *Platform) WaitFor(ctx context.Context, cond func(*Platform) bool) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cond(p) {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Gap is a run of missing sequence numbers within one device and boot.
type Gap struct {
	Device   string
	Boot     uint32
	From, To uint64 // inclusive
}

func (g Gap) String() string {
	return fmt.Sprintf("%s boot %d: seq %d-%d missing", g.Device, g.Boot, g.From, g.To)
}

// Gaps returns the missing sequence ranges per device and boot, between the
// lowest and highest sequence seen for each.
func (p *Platform) Gaps() []Gap {
	type run struct {
		device string
		boot   uint32
	}
	p.mu.Lock()
	byRun := map[run][]uint64{}
	for k := range p.seen {
		byRun[run{k.Device, k.Boot}] = append(byRun[run{k.Device, k.Boot}], k.Seq)
	}
	p.mu.Unlock()
	var gaps []Gap
	for r, seqs := range byRun {
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		for i := 1; i < len(seqs); i++ {
			if seqs[i] > seqs[i-1]+1 {
				gaps = append(gaps, Gap{Device: r.device, Boot: r.boot, From: seqs[i-1] + 1, To: seqs[i] - 1})
			}
		}
	}
	sort.Slice(gaps, func(i, j int) bool {
		if gaps[i].Device != gaps[j].Device {
			return gaps[i].Device < gaps[j].Device
		}
		if gaps[i].Boot != gaps[j].Boot {
			return gaps[i].Boot < gaps[j].Boot
		}
		return gaps[i].From < gaps[j].From
	})
	return gaps
}
