package mqtt

import (
	"slices"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

func TestProfileDefaults(t *testing.T) {
	for _, p := range []Profile{ProfileLTE, ProfileNarrowband} {
		o := Options{URLs: []string{"tcp://127.0.0.1:1"}, Fleet: "f", Device: "d", Profile: p.Name}
		if _, err := o.normalize(); err != nil {
			t.Fatal(err)
		}
		if o.BatchAge != p.NormalAge || o.HighAge != p.HighAge || o.BulkAge != p.BulkAge || o.KeepAlive != p.KeepAlive || o.PingTimeout != p.PingTimeout {
			t.Errorf("%s: options %+v", p.Name, o)
		}
		// A key set explicitly overrides the profile's value.
		o = Options{URLs: []string{"tcp://127.0.0.1:1"}, Fleet: "f", Device: "d", Profile: p.Name, BatchAge: 2 * time.Second, KeepAlive: 7 * time.Second}
		if _, err := o.normalize(); err != nil || o.BatchAge != 2*time.Second || o.KeepAlive != 7*time.Second || o.BulkAge != p.BulkAge {
			t.Errorf("%s: override: %v %+v", p.Name, err, o)
		}
	}
	// The budgets the profiles promise, less a margin for the link.
	if ProfileLTE.NormalAge > 5*time.Second-400*time.Millisecond || ProfileNarrowband.NormalAge > 10*time.Second-400*time.Millisecond {
		t.Error("a profile's normal age leaves no room for the link within its bound")
	}
	for _, bad := range []Options{{Profile: "satellite"}, {HighAge: 2 * time.Second}} {
		bad.URLs, bad.Fleet, bad.Device = []string{"tcp://127.0.0.1:1"}, "f", "d"
		if _, err := bad.normalize(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestLaneBounds checks the batching decision on a stepped clock, so that
// it is exact and cannot flake: a telemetry batch closes when its oldest
// record has waited its lane's age (normal BatchAge, bulk BulkAge), with
// every record taken by then in it; high records wait at most HighAge; an
// emergency goes at once and takes the held high records with it. The
// messages go through a real broker. What the budgets cost in wall-clock
// latency is measured by BenchmarkLiveLatency and
// BenchmarkEmergencyDuringDrain (docs/benchmarks.md), not asserted here.
func TestLaneBounds(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		br := start(t)
		tele := br.Observe(wire.Topic(testFleet, testDevice, "telemetry"))
		ev := br.Observe(wire.Topic(testFleet, testDevice, "events"))
		out := broker.NewOutbox()
		opts := testOptions(br.URL())
		opts.BatchAge, opts.BulkAge, opts.HighAge = 600*time.Millisecond, 2*time.Second, 150*time.Millisecond
		s, err := New(opts, out) // not run: the test is the drain loop
		if err != nil {
			t.Fatal(err)
		}
		d := newDrainer(s, newTestClient(t, br).cl)
		fixes := dayOfFixes(t, 1, 40)
		next := 0
		add := func(p kestrel.Priority) uint64 {
			r := fixes[next]
			next++
			r.Priority = p
			out.Add(r)
			return r.Seq
		}
		var sent [][]uint64 // seqs of each message published, in order
		round := func(now time.Time) time.Time {
			t.Helper()
			before := len(d.q)
			d.fill(now)
			wake, err := d.flush(now)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range d.q[before:] {
				sent = append(sent, append([]uint64(nil), f.seqs...))
			}
			return wake
		}
		expect := func(what string, want ...[]uint64) {
			t.Helper()
			if len(sent) != len(want) {
				t.Fatalf("%s: messages %v, want %v", what, sent, want)
			}
			for i := range want {
				if !slices.Equal(sent[i], want[i]) {
					t.Fatalf("%s: messages %v, want %v", what, sent, want)
				}
			}
			sent = sent[:0]
		}
		t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		at := func(d time.Duration) time.Time { return t0.Add(d) }

		// Normal: the batch waits for its oldest record's 600 ms, not
		// the newest's.
		a := add(kestrel.PriorityNormal)
		round(at(0))
		b := add(kestrel.PriorityNormal)
		if wake := round(at(300 * time.Millisecond)); !wake.Equal(at(600 * time.Millisecond)) {
			t.Fatalf("wake at %v, want the oldest record's bound %v", wake.Sub(t0), 600*time.Millisecond)
		}
		round(at(599 * time.Millisecond))
		expect("normal before its age")
		round(at(600 * time.Millisecond))
		expect("normal at its age", []uint64{a, b})

		// Bulk waits 2 s, unless a normal record joins whose bound is
		// earlier.
		t0 = t0.Add(10 * time.Second)
		c := add(kestrel.PriorityBulk)
		round(at(0))
		round(at(999 * time.Millisecond))
		e := add(kestrel.PriorityNormal)
		round(at(time.Second))
		round(at(1599 * time.Millisecond))
		expect("bulk and normal before the normal's age")
		round(at(1600 * time.Millisecond))
		expect("bulk pulled by the normal record", []uint64{c, e})
		c = add(kestrel.PriorityBulk)
		round(at(2 * time.Second))
		round(at(3999 * time.Millisecond))
		expect("bulk before its age")
		round(at(4 * time.Second))
		expect("bulk at its age", []uint64{c})

		// High: at most HighAge, on the events channel.
		t0 = t0.Add(10 * time.Second)
		h := add(kestrel.PriorityHigh)
		round(at(0))
		round(at(149 * time.Millisecond))
		expect("high before its age")
		round(at(150 * time.Millisecond))
		expect("high at its age", []uint64{h})

		// Emergency: at once, with the held high record; the normal
		// record held beside it keeps its own bound.
		t0 = t0.Add(10 * time.Second)
		n := add(kestrel.PriorityNormal)
		h = add(kestrel.PriorityHigh)
		round(at(0))
		em := add(kestrel.PriorityEmergency)
		round(at(10 * time.Millisecond))
		expect("emergency", []uint64{h, em})
		round(at(600 * time.Millisecond))
		expect("normal beside the emergency", []uint64{n})

		// A 10 Hz stream: each batch holds what arrived within its first
		// record's 600 ms.
		t0 = t0.Add(10 * time.Second)
		var stream []uint64
		for i := range 14 {
			stream = append(stream, add(kestrel.PriorityNormal))
			round(at(time.Duration(i) * 100 * time.Millisecond))
		}
		expect("10 Hz stream", stream[:7], stream[7:14])

		// The broker has them all, as sent.
		if !tele.Wait(10*time.Second, func(m []broker.Message) bool { return len(m) == 6 }) {
			t.Fatalf("%d telemetry messages at the broker, want 6", len(tele.Messages()))
		}
		if !ev.Wait(10*time.Second, func(m []broker.Message) bool { return len(m) == 2 }) {
			t.Fatalf("%d event messages at the broker, want 2", len(ev.Messages()))
		}
		if n := countRecords(t, tele.Messages()) + countRecords(t, ev.Messages()); n != next {
			t.Errorf("%d records at the broker, %d sent", n, next)
		}
	})
}

func countRecords(t *testing.T, msgs []broker.Message) int {
	n := 0
	for _, m := range msgs {
		recs, err := wire.DecodeBatchTopic(m.Topic, m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	return n
}

// TestBacklogNeverWaitsOnAge: with a normal age of an hour, a backlog
// still drains at once, its last partial batch included.
func TestBacklogNeverWaitsOnAge(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		br := start(t)
		out := broker.NewOutbox()
		opts := testOptions(br.URL())
		opts.BatchAge, opts.BatchMax = time.Hour, 100
		s := runSession(t, opts, out)
		waitFor(t, "connected", s.Connected)
		out.Add(dayOfFixes(t, 1, 1050)...) // 10 full batches and a tail of 50
		waitDrained(t, out, 10*time.Second)
	})
}
