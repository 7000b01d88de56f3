package mqtt

import (
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

// TestLatencyBudgets: each priority reaches the broker within its budget,
// and records share messages as far as the budgets allow. The ages are
// scaled down (normal 600 ms, bulk 2 s, high 150 ms) so the test is short;
// the profiles only choose the values.
func TestLatencyBudgets(t *testing.T) {
	eachBroker(t, func(t *testing.T, start startFn) {
		br := start(t)
		tele := br.Observe(wire.Topic(testFleet, testDevice, "telemetry"))
		ev := br.Observe(wire.Topic(testFleet, testDevice, "events"))
		out := broker.NewOutbox()
		opts := testOptions(br.URL())
		opts.BatchAge, opts.BulkAge, opts.HighAge = 600*time.Millisecond, 2*time.Second, 150*time.Millisecond
		s := runSession(t, opts, out)
		waitFor(t, "connected", s.Connected)

		fixes := dayOfFixes(t, 1, 40)
		sent := map[uint64]time.Time{}
		prio := map[uint64]kestrel.Priority{}
		for i := range fixes {
			r := fixes[i]
			switch {
			case i == 25:
				r.Priority = kestrel.PriorityEmergency
			case i >= 20 && i < 24:
				r.Priority = kestrel.PriorityHigh
			case i < 5:
				r.Priority = kestrel.PriorityBulk
			}
			sent[r.Seq], prio[r.Seq] = time.Now(), r.Priority
			out.Add(r)
			time.Sleep(100 * time.Millisecond) // 10 Hz
		}
		if !tele.Wait(10*time.Second, func(m []broker.Message) bool { return countRecords(t, m) >= 34 }) {
			t.Fatal("telemetry incomplete")
		}
		if !ev.Wait(10*time.Second, func(m []broker.Message) bool { return countRecords(t, m) >= 5 }) {
			t.Fatal("events incomplete")
		}
		budget := map[kestrel.Priority]time.Duration{
			kestrel.PriorityEmergency: 0, kestrel.PriorityHigh: opts.HighAge,
			kestrel.PriorityNormal: opts.BatchAge, kestrel.PriorityBulk: opts.BulkAge,
		}
		const slack = 250 * time.Millisecond // loopback, scheduling on a loaded machine
		var normalMsgs, normalRecs int
		for _, m := range append(tele.Messages(), ev.Messages()...) {
			recs, err := wire.DecodeBatchTopic(m.Topic, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			allNormal := true
			for _, r := range recs {
				p := prio[r.Seq]
				if late := m.At.Sub(sent[r.Seq]); late > budget[p]+slack {
					t.Errorf("seq %d (%s) arrived after %v, budget %v", r.Seq, p, late, budget[p])
				}
				allNormal = allNormal && p == kestrel.PriorityNormal
			}
			if allNormal {
				normalMsgs++
				normalRecs += len(recs)
			}
		}
		// At 10 Hz with a 600 ms budget a message holds about 6 fixes:
		// batching happens, the budget does not send each fix alone.
		if normalMsgs == 0 || normalRecs/normalMsgs < 3 {
			t.Errorf("%d normal records in %d messages: not batched within the budget", normalRecs, normalMsgs)
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
