package mqtt

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

var dataFilter = wire.Topic(testFleet, testDevice, "+")

func TestDeliverEveryRecord(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		out := broker.NewOutbox()
		recs := dayOfFixes(t, 1, 5000)
		// Every 97th record is urgent: it must travel on the events lane.
		for i := 0; i < len(recs); i += 97 {
			recs[i].Priority = kestrel.PriorityHigh
		}
		out.Add(recs...)
		opts := testOptions(b.URL())
		opts.State = func() map[string]any {
			return map[string]any{"config_version": uint64(12), "capabilities": []any{"gps", "radio"}}
		}
		s := runSession(t, opts, out)
		waitDrained(t, out, 30*time.Second)

		got := waitSeen(t, 1, len(recs), obs)
		if miss := got.missing(1, len(recs)); len(miss) > 0 {
			t.Fatalf("%d records missing, first %v", len(miss), miss[:min(5, len(miss))])
		}
		if got.dups() != 0 {
			t.Errorf("%d duplicates without any fault", got.dups())
		}
		if len(got.laneErrs) > 0 {
			t.Errorf("records on the wrong lane: %v", got.laneErrs[:min(5, len(got.laneErrs))])
		}
		if bad := out.BadOps(); len(bad) > 0 {
			t.Errorf("outbox protocol violations: %v", bad)
		}
		if !s.Connected() {
			t.Error("Connected() is false while connected")
		}
		st := s.Stats()
		if st.Records.Load() != uint64(len(recs)) {
			t.Errorf("stats: %d records committed, want %d", st.Records.Load(), len(recs))
		}

		// Birth: retained, online, carrying boot, bdseq and State's fields.
		birth := lastState(t, obs)
		if birth["online"] != true || birth["boot"] != uint32(testBoot) && birth["boot"] != int64(testBoot) && birth["boot"] != uint64(testBoot) {
			t.Errorf("birth = %v", birth)
		}
		if _, ok := birth["bdseq"]; !ok || birth["config_version"] == nil || birth["capabilities"] == nil || birth["version"] != "test" {
			t.Errorf("birth lacks fields: %v", birth)
		}
		if r := retainedState(t, b); r["online"] != true || r["bdseq"] != birth["bdseq"] {
			t.Errorf("retained state %v, want the birth %v", r, birth)
		}
	})
}

// lastState returns the last state message an observer saw, decoded.
func lastState(t testing.TB, obs *broker.Observer) map[string]any {
	t.Helper()
	msgs := obs.Messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Topic == wire.Topic(testFleet, testDevice, "state") {
			m, err := DecodeState(msgs[i].Payload)
			if err != nil {
				t.Fatalf("decode state: %v", err)
			}
			return m
		}
	}
	t.Fatalf("no state message among %d", len(msgs))
	return nil
}

func TestBrokerKilledDuringDrain(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		out := broker.NewOutbox()
		const n = 50000
		out.Add(dayOfFixes(t, 1, n)...)
		opts := testOptions(b.URL())
		opts.BatchMax = 250
		if os.Getenv("KESTREL_MQTT_DEBUG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		s := runSession(t, opts, out)

		// Kill once a fifth of the backlog is through, then come back.
		if !obs.Wait(30*time.Second, func(m []broker.Message) bool { return len(m) > n/opts.BatchMax/5 }) {
			t.Fatalf("drain did not start: %d messages", obs.Len())
		}
		b.Kill()
		time.Sleep(300 * time.Millisecond)
		if q, _ := out.Pending(); q == 0 {
			t.Log("backlog already drained before the kill; the test proves less")
		}
		b.Restart()
		waitDrained(t, out, 60*time.Second)

		got := waitSeen(t, 1, n, obs)
		if miss := got.missing(1, n); len(miss) > 0 {
			t.Fatalf("%d records missing after a broker kill, first %v", len(miss), miss[:min(5, len(miss))])
		}
		losses := int(s.Stats().Connects.Load()) - 1
		if losses < 1 {
			t.Fatalf("session never reconnected (connects=%d)", losses+1)
		}
		if limit := losses * defaultInFlight * opts.BatchMax; got.dups() > limit {
			t.Errorf("%d duplicates, more than the in-flight window allows (%d)", got.dups(), limit)
		}
		t.Logf("%d duplicates over %d reconnects; %d records released", got.dups(), losses, s.Stats().Released.Load())
		if bad := out.BadOps(); len(bad) > 0 {
			t.Errorf("outbox protocol violations: %v", bad[:min(5, len(bad))])
		}
	})
}

func TestFailoverToSecondBroker(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		a, b := start(t), start(t)
		obsA, obsB := a.Observe(dataFilter), b.Observe(dataFilter)
		out := broker.NewOutbox()
		out.Add(dayOfFixes(t, 1, 1000)...)
		opts := testOptions(a.URL(), b.URL())
		s := runSession(t, opts, out)
		waitDrained(t, out, 20*time.Second)
		// The observer is a separate subscriber: its copy may land just
		// after the session's PUBACK.
		if !obsA.Wait(5*time.Second, func(m []broker.Message) bool { return len(m) > 0 }) {
			t.Fatal("first broker got nothing while it was up")
		}

		a.Kill()
		out.Add(dayOfFixes(t, 1001, 1000)...)
		waitDrained(t, out, 20*time.Second)
		got := waitSeen(t, 1, 2000, obsA, obsB)
		if miss := got.missing(1, 2000); len(miss) > 0 {
			t.Fatalf("%d records missing after failover, first %v", len(miss), miss[:min(5, len(miss))])
		}
		gotB := decodeSeen(t, obsB.Messages())
		if gotB.count[2000] == 0 {
			t.Errorf("records after the failover did not reach the second broker")
		}
		if s.Stats().Connects.Load() < 2 {
			t.Errorf("connects = %d, want a second connection", s.Stats().Connects.Load())
		}
	})
}

func TestFirstConnectRetried(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		b.Kill() // down when the session starts: paho alone would give up
		out := broker.NewOutbox()
		out.Add(dayOfFixes(t, 1, 100)...)
		sink := &logSink{}
		opts := testOptions(b.URL())
		opts.Logger = slogNew(sink)
		runSession(t, opts, out)
		sink.waitFor(t, "mqtt connect failed", 5*time.Second)
		b.Restart()
		waitDrained(t, out, 20*time.Second)
		if miss := waitSeen(t, 1, 100, obs).missing(1, 100); len(miss) > 0 {
			t.Fatalf("missing %v", miss)
		}
	})
}

func TestMutualTLS(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		ca := broker.NewCA(t)
		b := start(t, broker.WithTLS(ca))
		obs := b.Observe(dataFilter)

		t.Run("accepted", func(t *testing.T) {
			cfg, err := LoadTLS(ca.CAFile, ca.ClientCert, ca.ClientKey)
			if err != nil {
				t.Fatal(err)
			}
			out := broker.NewOutbox()
			out.Add(dayOfFixes(t, 1, 100)...)
			opts := testOptions(b.URL())
			opts.TLS = cfg
			runSession(t, opts, out)
			waitDrained(t, out, 20*time.Second)
			if miss := waitSeen(t, 1, 100, obs).missing(1, 100); len(miss) > 0 {
				t.Fatalf("missing %v", miss)
			}
		})

		other := broker.NewCA(t)
		wrongCA, err := LoadTLS(other.CAFile, ca.ClientCert, ca.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		noCert := ca.ClientTLS(t)
		noCert.Certificates = nil
		foreignCert, err := LoadTLS(ca.CAFile, other.ClientCert, other.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			cfg  any
			want string
		}{
			{"wrong CA", wrongCA, "certificate signed by unknown authority"},
			{"no client certificate", noCert, "mqtt connect failed"},
			{"client certificate from another CA", foreignCert, "mqtt connect failed"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := obs.Len()
				out := broker.NewOutbox()
				out.Add(dayOfFixes(t, 10001, 10)...)
				sink := &logSink{}
				opts := testOptions(b.URL())
				opts.TLS = tc.cfg.(*tlsConfig)
				opts.Logger = slogNew(sink)
				s := runSession(t, opts, out)
				line := sink.waitFor(t, tc.want, 10*time.Second)
				t.Logf("refused: %s", line)
				sink.waitFor(t, "mqtt connect failed", 10*time.Second)
				if s.Connected() {
					t.Fatal("session connected")
				}
				if q, f := out.Pending(); q != 10 || f != 0 {
					t.Errorf("outbox %d queued, %d in flight; want all 10 untouched", q, f)
				}
				// Judge by this client's own records (seqs 10001-10010):
				// a late copy of an earlier subtest's message may still
				// reach the observer.
				got := decodeSeen(t, obs.Messages()[before:])
				for q := uint64(10001); q <= 10010; q++ {
					if got.count[q] > 0 {
						t.Errorf("broker accepted record %d from a refused client", q)
					}
				}
			})
		}
	})
}

func TestEmergencyJumpsBacklog(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(dataFilter)
		out := broker.NewOutbox()
		const n = 100000
		out.Add(dayOfFixes(t, 1, n)...)
		opts := testOptions(b.URL())
		runSession(t, opts, out)

		if !obs.Wait(30*time.Second, func(m []broker.Message) bool { return len(m) >= 10 }) {
			t.Fatalf("drain did not start")
		}
		before := decodeSeen(t, obs.Messages()).records
		const emSeq = n + 1
		out.Add(emergency(emSeq))
		var at int
		if !obs.Wait(30*time.Second, func(m []broker.Message) bool {
			s := decodeSeen(t, m)
			if s.count[emSeq] == 0 {
				return false
			}
			at = slices.Index(s.order, emSeq)
			return true
		}) {
			t.Fatal("emergency never arrived")
		}
		// Ahead of it may only be what was already sent or held when it
		// was raised: the in-flight window and one batch being built.
		// The count "before" comes from the broker's side, which lags the
		// session under CPU load (CI runs packages in parallel), so allow
		// three windows: still a small fraction of the 100,000 backlog.
		limit := before + 3*(defaultInFlight+2)*defaultBatchMax
		if at > limit || at >= n {
			t.Errorf("emergency arrived after %d backlog records (had %d when raised, limit %d)", at, before, limit)
		}
		t.Logf("emergency raised after %d records had arrived, arrived after %d of %d", before, at, n)
		waitDrained(t, out, 60*time.Second)
		got := waitSeen(t, 1, n+1, obs)
		if miss := got.missing(1, n+1); len(miss) > 0 {
			t.Fatalf("%d records missing", len(miss))
		}
	})
}

func TestPublishAndSubscribe(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe("kestrel/v1/#")
		out := broker.NewOutbox()
		s := runSession(t, testOptions(b.URL()), out)

		got := make(chan string, 1000)
		block := make(chan struct{})
		cmdTopic := wire.Topic(testFleet, testDevice, "cmd")
		allTopic := "kestrel/v1/" + testFleet + "/_all/config/desired"
		for _, f := range []string{cmdTopic, allTopic} {
			if err := s.Subscribe(f, func(topic string, payload []byte) {
				<-block // a handler that blocks must not stall the session
				got <- topic + " " + string(payload)
			}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Publish(ctx, "reply", []byte("r1"), false); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if !obs.Wait(5*time.Second, func(m []broker.Message) bool {
			return slices.ContainsFunc(m, func(m broker.Message) bool {
				return m.Topic == wire.Topic(testFleet, testDevice, "reply") && string(m.Payload) == "r1"
			})
		}) {
			t.Fatal("reply not seen by the broker")
		}

		// Fill most of the blocked handler's queue, then check that the
		// session still delivers records (TestInboundBurstLosesNothing
		// goes past the queue).
		pub := newTestClient(t, b)
		for i := range inboundQueue - 16 {
			pub.publish(t, cmdTopic, []byte{byte(i)})
		}
		out.Add(dayOfFixes(t, 1, 50)...)
		waitDrained(t, out, 10*time.Second)
		close(block)
		deadline := time.Now()

		// Re-subscribed after the broker comes back.
		connects := s.Stats().Connects.Load()
		b.Kill()
		b.Restart()
		deadline = time.Now().Add(10 * time.Second)
		for s.Stats().Connects.Load() == connects && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for len(got) > 0 {
			<-got
		}
		pub = newTestClient(t, b)
		pub.publish(t, allTopic, []byte("v2"))
		select {
		case m := <-got:
			if m != allTopic+" v2" {
				t.Errorf("handler got %q", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no message after reconnect: subscription not restored")
		}
	})
}

// TestInboundBurstLosesNothing: a burst of QoS 1 commands larger than the
// handler queue, sent while the handler is busy, all reach the handler, in
// order: none is acknowledged and then dropped. (mosquitto holds them back
// by its in-flight window, since the PUBACK waits for the handler; mochi
// sends them all, and the session then stops reading until there is room.)
func TestInboundBurstLosesNothing(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		s := runSession(t, testOptions(b.URL()), broker.NewOutbox())
		n := inboundQueue + 100
		got := make(chan string, n+10)
		block := make(chan struct{})
		cmdTopic := wire.Topic(testFleet, testDevice, "cmd")
		if err := s.Subscribe(cmdTopic, func(_ string, payload []byte) {
			<-block
			got <- string(payload)
		}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !s.Connected(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("not connected") // Connected: subscribed too
			}
		}
		pub := newTestClient(t, b)
		for i := range n {
			// Not waiting on each PUBACK: the burst arrives at once.
			pub.cl.Publish(cmdTopic, 1, false, strconv.Itoa(i))
		}
		tok := pub.cl.Publish(cmdTopic, 1, false, "last")
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		close(block)
		for i := range n {
			select {
			case m := <-got:
				if m != strconv.Itoa(i) {
					t.Fatalf("message %d is %q: lost or out of order", i, m)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%d of %d messages arrived (drops %d)", i, n, s.Stats().InboundDrops.Load())
			}
		}
		if d := s.Stats().InboundDrops.Load(); d != 0 {
			t.Errorf("%d inbound messages dropped", d)
		}
	})
}

func TestGracefulCloseSaysOffline(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		b := start(t)
		obs := b.Observe(wire.Topic(testFleet, testDevice, "state"))
		s, err := New(testOptions(b.URL()), broker.NewOutbox())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		if !obs.Wait(10*time.Second, func([]broker.Message) bool { return s.Connected() }) {
			t.Fatal("not connected")
		}
		birth := lastState(t, obs)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		// The observer may trail the PUBACK (mosquitto forwards to it).
		obs.Wait(5*time.Second, func(m []broker.Message) bool {
			st, err := DecodeState(m[len(m)-1].Payload)
			return err == nil && st["online"] == false
		})
		death := lastState(t, obs)
		if r := retainedState(t, b); r["online"] != false || r["bdseq"] != birth["bdseq"] {
			t.Errorf("retained state after close %v, want offline with bdseq %v", r, birth["bdseq"])
		}
		if death["online"] != false || death["bdseq"] != birth["bdseq"] || death["boot"] != birth["boot"] {
			t.Errorf("death %v does not match birth %v", death, birth)
		}
		if s.Connected() {
			t.Error("Connected after Close")
		}
		if err := s.Run(context.Background()); err == nil {
			t.Error("Run after Close returned nil")
		}
	})
}
