package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

var (
	_ Outbox      = (*broker.Outbox)(nil)
	_ Notifier    = (*broker.Outbox)(nil)
	_ UrgentTaker = (*broker.Outbox)(nil)
)

const (
	testFleet  = "met"
	testDevice = "bwc-0042"
	testBoot   = 7
)

var (
	trackOnce sync.Once
	track     []kestrel.Record
	trackErr  error
)

// trackFixes loads the real 1 s track in testdata.
func trackFixes(t testing.TB) []kestrel.Record {
	t.Helper()
	trackOnce.Do(func() {
		b, err := os.ReadFile("testdata/santa-rosa-marathon-run.fixes.jsonl")
		if err != nil {
			trackErr = err
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			tm, p, err := wire.ParseFixJSON(line)
			if err != nil {
				trackErr = err
				return
			}
			p.Flags |= kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack
			track = append(track, kestrel.Record{Envelope: kestrel.Envelope{Time: tm}, Body: &p})
		}
	})
	if trackErr != nil {
		t.Fatalf("load track: %v", trackErr)
	}
	return track
}

// dayOfFixes returns n positions at 1 Hz with seqs from first: the real
// track, looped, its time shifted on each lap so time keeps rising.
func dayOfFixes(t testing.TB, first uint64, n int) []kestrel.Record {
	t.Helper()
	tr := trackFixes(t)
	span := tr[len(tr)-1].Time - tr[0].Time + 1000
	out := make([]kestrel.Record, n)
	for i := range out {
		src := tr[i%len(tr)]
		p := *src.Body.(*kestrel.Position)
		out[i] = kestrel.Record{
			Envelope: kestrel.Envelope{
				Device: testDevice, Boot: testBoot, Seq: first + uint64(i),
				Time: src.Time + int64(i/len(tr))*span, Priority: kestrel.PriorityNormal,
			},
			Body: &p,
		}
	}
	return out
}

func emergency(seq uint64) kestrel.Record {
	return kestrel.Record{
		Envelope: kestrel.Envelope{Device: testDevice, Boot: testBoot, Seq: seq, Time: time.Now().UnixMilli(), Priority: kestrel.PriorityEmergency},
		Body:     &kestrel.Event{Type: kestrel.EventEmergency, Source: "firmware", Name: "button"},
	}
}

type startFn func(testing.TB, ...broker.Option) *broker.Broker

// eachBroker runs f against mochi in process and against mosquitto.
func eachBroker(t *testing.T, f func(t *testing.T, start startFn)) {
	t.Run("mochi", func(t *testing.T) { f(t, broker.StartMochi) })
	t.Run("mosquitto", func(t *testing.T) { f(t, broker.StartMosquitto) })
}

func testOptions(urls ...string) Options {
	return Options{
		URLs: urls, Fleet: testFleet, Device: testDevice, Boot: testBoot, Version: "test",
		KeepAlive: 5 * time.Second, PingTimeout: 2 * time.Second, ConnectTimeout: 2 * time.Second,
		BatchAge:   time.Second, // the tests' own pace; the profiles' ages have their own tests
		AckTimeout: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	}
}

// runSession starts Run in the background and stops it when the test ends.
func runSession(t testing.TB, opts Options, out Outbox) *Session {
	t.Helper()
	s, err := New(opts, out)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10s after cancel")
		}
	})
	return s
}

func waitDrained(t testing.TB, out *broker.Outbox, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := out.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
}

// seen decodes every data message an observer saw.
type seen struct {
	count    map[uint64]int // seq -> copies
	order    []uint64       // first arrival order
	laneErrs []string
	records  int
}

func decodeSeen(t testing.TB, msgs []broker.Message) seen {
	t.Helper()
	s := seen{count: make(map[uint64]int)}
	for _, m := range msgs {
		ch := m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]
		if ch != "telemetry" && ch != "events" {
			continue
		}
		recs, err := wire.DecodeBatchTopic(m.Topic, m.Payload)
		if err != nil {
			t.Fatalf("decode %s: %v", m.Topic, err)
		}
		if len(recs) > 0 && recs[0].Device != testDevice {
			t.Fatalf("batch device %q, want %q", recs[0].Device, testDevice)
		}
		for _, r := range recs {
			urgent := r.Priority >= kestrel.PriorityHigh
			if urgent != (ch == "events") {
				s.laneErrs = append(s.laneErrs, ch+": "+r.Priority.String())
			}
			if s.count[r.Seq] == 0 {
				s.order = append(s.order, r.Seq)
			}
			s.count[r.Seq]++
			s.records++
		}
	}
	return s
}

func (s seen) dups() int { return s.records - len(s.count) }

func (s seen) missing(first uint64, n int) []uint64 {
	var miss []uint64
	for i := range uint64(n) {
		if s.count[first+i] == 0 {
			miss = append(miss, first+i)
		}
	}
	return miss
}

// logSink is an slog handler that keeps messages for assertions.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logSink) waitFor(t testing.TB, substr string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, s := range l.lines {
			if strings.Contains(s, substr) {
				l.mu.Unlock()
				return s
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no log line containing %q in %v; got %q", substr, d, l.lines)
	return ""
}

type tlsConfig = tls.Config

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }

// testClient is a plain paho client standing in for the platform.
type testClient struct{ cl paho.Client }

func newTestClient(t testing.TB, b *broker.Broker) *testClient {
	t.Helper()
	po := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("platform-" + strconv.FormatInt(time.Now().UnixNano(), 36)).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	cl := paho.NewClient(po)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform client connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return &testClient{cl: cl}
}

func (c *testClient) publish(t testing.TB, topic string, payload []byte) {
	t.Helper()
	if tok := c.cl.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform publish %s: %v", topic, tok.Error())
	}
}

// retainedState subscribes afresh, as the platform would after a restart,
// and returns the retained state message.
func retainedState(t testing.TB, b *broker.Broker) map[string]any {
	t.Helper()
	c := newTestClient(t, b)
	got := make(chan []byte, 1)
	tok := c.cl.Subscribe(wire.Topic(testFleet, testDevice, "state"), 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			select {
			case got <- append([]byte(nil), m.Payload()...):
			default:
			}
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe state: %v", tok.Error())
	}
	select {
	case p := <-got:
		m, err := DecodeState(p)
		if err != nil {
			t.Fatalf("decode retained state: %v", err)
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no retained state message")
		return nil
	}
}

// waitSeen waits (up to 15s) until the observers have seen seqs
// first..first+n-1, since a subscriber may trail the PUBACK a little, and
// returns what they saw.
func waitSeen(t testing.TB, first uint64, n int, obs ...*broker.Observer) seen {
	t.Helper()
	all := func() []broker.Message {
		var m []broker.Message
		for _, o := range obs {
			m = append(m, o.Messages()...)
		}
		return m
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := decodeSeen(t, all())
		if len(s.missing(first, n)) == 0 || time.Now().After(deadline) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}
