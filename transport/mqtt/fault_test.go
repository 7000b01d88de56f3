package mqtt

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/faultproxy"
)

// A link that drops without a DISCONNECT makes the broker publish the
// Last Will: retained, offline, with the bdseq of the birth it ends.
func TestLastWillOnCut(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		p := faultproxy.Start(t, b.Addr())
		s := runSession(t, testOptions("tcp://"+p.Addr()), broker.NewOutbox())
		waitFor(t, "connected", s.Connected)
		birth := retainedState(t, b)
		if birth["online"] != true {
			t.Fatalf("birth %v", birth)
		}

		p.SetDown(true)
		var will map[string]any
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if will = retainedState(t, b); will["online"] == false {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if will["online"] != false || will["bdseq"] != birth["bdseq"] || will["boot"] != birth["boot"] {
			t.Fatalf("retained state after cut %v, want the will for birth %v", will, birth)
		}

		p.SetDown(false)
		var again map[string]any
		deadline = time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if again = retainedState(t, b); again["online"] == true {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if again["online"] != true || toU64(again["bdseq"]) <= toU64(birth["bdseq"]) {
			t.Fatalf("state after reconnect %v, want online with a bdseq above %v", again, birth["bdseq"])
		}
	})
}

// A link that silently eats data (no RST, no FIN) must not hang the
// session: the keepalive or the PUBACK deadline notices, the records in
// flight go back to the Outbox, and they are delivered once the link heals.
func TestSilentLinkDetected(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		p := faultproxy.Start(t, b.Addr())
		sink := &logSink{}
		opts := testOptions("tcp://" + p.Addr())
		opts.KeepAlive, opts.PingTimeout, opts.AckTimeout = time.Second, time.Second, 2*time.Second
		opts.Logger = slogNew(sink)
		out := broker.NewOutbox()
		s := runSession(t, opts, out)
		waitFor(t, "connected", s.Connected)

		p.SetBlackhole(true)
		out.Add(dayOfFixes(t, 1, 3000)...)
		sink.waitFor(t, "mqtt connection down", 15*time.Second)
		p.SetBlackhole(false)
		waitDrained(t, out, 30*time.Second)
		got := waitSeen(t, 1, 3000, obs)
		if miss := got.missing(1, 3000); len(miss) > 0 {
			t.Fatalf("%d records missing after a silent outage", len(miss))
		}
		if s.Stats().Released.Load() == 0 {
			t.Errorf("nothing was released: the outage did not catch records in flight")
		}
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func toU64(v any) uint64 {
	switch n := v.(type) {
	case uint64:
		return n
	case int64:
		return uint64(n)
	case uint32:
		return uint64(n)
	case int:
		return uint64(n)
	}
	return 0
}

// The bandwidth cap holds the average payload rate down (a lower bound on
// time: a slow machine cannot make it pass wrongly).
func TestRateLimit(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		out := broker.NewOutbox()
		opts := testOptions(b.URL())
		opts.RateLimit = 8000
		opts.BatchBytes = 1000
		s := runSession(t, opts, out)
		waitFor(t, "connected", s.Connected)
		t0 := time.Now()
		out.Add(dayOfFixes(t, 1, 4000)...)
		waitDrained(t, out, 30*time.Second)
		took := time.Since(t0)
		sent := s.Stats().Bytes.Load()
		// The first batch goes at once; the rest must wait their turn.
		floor := time.Duration(float64(sent-uint64(opts.BatchBytes)) / float64(opts.RateLimit) * float64(time.Second))
		if took < floor*9/10 {
			t.Errorf("%d bytes in %v: faster than %d B/s allows (%v)", sent, took, opts.RateLimit, floor)
		}
		t.Logf("%d payload bytes in %d messages took %v at a %d B/s cap", sent, s.Stats().Messages.Load(), took, opts.RateLimit)
		if miss := waitSeen(t, 1, 4000, obs).missing(1, 4000); len(miss) > 0 {
			t.Fatalf("%d missing", len(miss))
		}
		for _, m := range obs.Messages() {
			if len(m.Payload) > opts.BatchBytes {
				t.Errorf("%s payload of %d bytes, over BatchBytes %d", m.Topic, len(m.Payload), opts.BatchBytes)
			}
		}
	})
}

// plainOutbox hides the optional capabilities: the session must poll, and
// an emergency must wait for a window slot instead of TakeUrgent.
type plainOutbox struct{ o *broker.Outbox }

func (p plainOutbox) Take(dst []kestrel.Record, max int) ([]kestrel.Record, error) {
	return p.o.Take(dst, max)
}
func (p plainOutbox) Commit(seqs []uint64) error { return p.o.Commit(seqs) }
func (p plainOutbox) Release(seqs []uint64)      { p.o.Release(seqs) }

func TestOutboxWithoutCapabilities(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		out := broker.NewOutbox()
		opts := testOptions(b.URL())
		opts.Poll = 20 * time.Millisecond
		s := runSession(t, opts, plainOutbox{out})
		waitFor(t, "connected", s.Connected)
		const n = 20000
		out.Add(dayOfFixes(t, 1, n)...)
		if !obs.Wait(30*time.Second, func(m []broker.Message) bool { return len(m) >= 5 }) {
			t.Fatal("polling session never sent")
		}
		out.Add(emergency(n + 1))
		waitDrained(t, out, 30*time.Second)
		got := waitSeen(t, 1, n+1, obs)
		if miss := got.missing(1, n+1); len(miss) > 0 {
			t.Fatalf("%d missing", len(miss))
		}
		if at := slices.Index(got.order, n+1); at >= n {
			t.Errorf("emergency arrived last (after %d records)", at)
		}
	})
}

// Every goroutine the session (and its paho clients) started is gone after
// Close, also after a reconnect and a refused connect.
func TestNoGoroutineLeak(t *testing.T) {
	b := broker.StartMochi(t)
	p := faultproxy.Start(t, b.Addr())
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	out := broker.NewOutbox()
	opts := testOptions("tcp://"+p.Addr(), "tcp://127.0.0.1:1") // the second never answers
	s, err := New(opts, out)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	waitFor(t, "connected", s.Connected)
	out.Add(dayOfFixes(t, 1, 2000)...)
	p.Cut()
	waitDrained(t, out, 20*time.Second)
	if err := s.Subscribe("kestrel/v1/met/_all/#", func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
