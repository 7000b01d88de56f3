package broker

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel"
)

func connect(t *testing.T, b *Broker, tc *tls.Config) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("t-" + t.Name()).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("connect timed out")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { cl.Disconnect(0) })
	}
	return cl, tok.Error()
}

func publish(t *testing.T, cl paho.Client, topic, payload string) {
	t.Helper()
	if tok := cl.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func eachKind(t *testing.T, f func(t *testing.T, start func(testing.TB, ...Option) *Broker)) {
	t.Run("mochi", func(t *testing.T) { f(t, StartMochi) })
	t.Run("mosquitto", func(t *testing.T) { f(t, StartMosquitto) })
}

func TestKillRestartSamePortObserverSurvives(t *testing.T) {
	eachKind(t, func(t *testing.T, start func(testing.TB, ...Option) *Broker) {
		b := start(t)
		addr := b.Addr()
		obs := b.Observe("a/+")
		cl, err := connect(t, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, cl, "a/1", "one")
		publish(t, cl, "b/1", "other") // outside the filter

		b.Kill()
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatal("killed broker still accepts connections")
		}
		b.Restart()
		if b.Addr() != addr {
			t.Fatalf("restarted on %s, was %s", b.Addr(), addr)
		}
		cl2, err := connect(t, b, nil)
		if err != nil {
			t.Fatalf("connect after restart: %v", err)
		}
		publish(t, cl2, "a/2", "two")
		if !obs.Wait(10*time.Second, func(m []Message) bool { return len(m) >= 2 }) {
			t.Fatalf("observer saw %v", obs.Messages())
		}
		m := obs.Messages()
		if len(m) != 2 || string(m[0].Payload) != "one" || m[1].Topic != "a/2" {
			t.Errorf("observer saw %+v", m)
		}
	})
}

func TestMosquittoKillIsSIGKILL(t *testing.T) {
	b := StartMosquitto(t)
	pid := b.PID()
	if pid == 0 {
		t.Fatal("no pid")
	}
	b.Kill()
	if b.PID() != 0 {
		t.Error("pid still set after Kill")
	}
	b.Restart()
	if p := b.PID(); p == 0 || p == pid {
		t.Errorf("restart pid %d (was %d)", p, pid)
	}
}

func TestTLSIsMutual(t *testing.T) {
	eachKind(t, func(t *testing.T, start func(testing.TB, ...Option) *Broker) {
		ca := NewCA(t)
		b := start(t, WithTLS(ca))
		if _, err := connect(t, b, ca.ClientTLS(t)); err != nil {
			t.Fatalf("client with a CA certificate refused: %v", err)
		}
		noCert := ca.ClientTLS(t)
		noCert.Certificates = nil
		if _, err := connect(t, b, noCert); err == nil {
			t.Error("client without a certificate accepted")
		}
		other := NewCA(t)
		if _, err := connect(t, b, other.ClientTLS(t)); err == nil {
			t.Error("client trusting another CA accepted")
		}
	})
}

func rec(seq uint64, p kestrel.Priority) kestrel.Record {
	return kestrel.Record{Envelope: kestrel.Envelope{Seq: seq, Priority: p}, Body: &kestrel.Event{}}
}

func seqs(rs []kestrel.Record) []uint64 {
	var s []uint64
	for _, r := range rs {
		s = append(s, r.Seq)
	}
	return s
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOutboxOrder(t *testing.T) {
	o := NewOutbox()
	o.Live = time.Hour
	o.Add(rec(1, kestrel.PriorityBulk), rec(2, kestrel.PriorityNormal), rec(3, kestrel.PriorityHigh),
		rec(4, kestrel.PriorityNormal), rec(5, kestrel.PriorityEmergency), rec(6, kestrel.PriorityNormal))
	got, _ := o.Take(nil, 100)
	if want := []uint64{5, 3, 6, 4, 2, 1}; !equal(seqs(got), want) {
		t.Errorf("live order %v, want %v", seqs(got), want)
	}

	o2 := NewOutbox() // Live 0: the normal lane is all backlog, oldest first
	o2.Add(rec(1, kestrel.PriorityNormal), rec(2, kestrel.PriorityNormal), rec(3, kestrel.PriorityBulk), rec(4, kestrel.PriorityHigh))
	got, _ = o2.Take(nil, 2)
	if want := []uint64{4, 1}; !equal(seqs(got), want) {
		t.Errorf("backlog order %v, want %v", seqs(got), want)
	}
	if u, _ := o2.TakeUrgent(nil, 10); len(u) != 0 {
		t.Errorf("TakeUrgent returned %v with no urgent records left", seqs(u))
	}
	o2.Release([]uint64{1})
	got, _ = o2.Take(nil, 10)
	if want := []uint64{1, 2, 3}; !equal(seqs(got), want) {
		t.Errorf("after release %v, want %v", seqs(got), want)
	}
	if err := o2.Commit([]uint64{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := o2.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o2.Commit([]uint64{4}); err == nil || len(o2.BadOps()) != 1 {
		t.Errorf("double commit not caught: %v %v", err, o2.BadOps())
	}
	select {
	case <-o2.Ready():
	default:
		t.Error("Ready not signalled after Add/Release")
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		f, t string
		ok   bool
	}{
		{"a/+/c", "a/b/c", true}, {"a/#", "a/b/c", true}, {"a/+", "a/b/c", false},
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"#", "x", true}, {"a/+/c", "a/b", false},
	} {
		if Match(tc.f, tc.t) != tc.ok {
			t.Errorf("Match(%q, %q) != %v", tc.f, tc.t, tc.ok)
		}
	}
}
