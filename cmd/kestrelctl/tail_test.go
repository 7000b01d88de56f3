package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// tailBuf is a bytes.Buffer safe for the tail goroutine and the test.
type tailBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *tailBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *tailBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func tailStart(t *testing.T, args ...string) (code <-chan int, stdout, stderr *tailBuf) {
	t.Helper()
	stdout, stderr = &tailBuf{}, &tailBuf{}
	ch := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		ch <- dispatch(append([]string{"tail"}, args...), stdio{ctx: ctx, stdin: strings.NewReader(""), stdout: stdout, stderr: stderr})
	}()
	return ch, stdout, stderr
}

func tailBatch(t *testing.T, device string, boot uint32, seqs ...uint64) []byte {
	t.Helper()
	recs := make([]kestrel.Record, len(seqs))
	for i, s := range seqs {
		recs[i] = kestrel.Record{
			Envelope: kestrel.Envelope{Device: device, Boot: boot, Seq: s, Time: 1700000000000 + int64(s)*1000, Priority: kestrel.PriorityNormal},
			Body:     &kestrel.Position{Lat: 515000000 + int32(s), Lon: -1200000, Mode: kestrel.Fix2D},
		}
	}
	var enc wire.Encoder
	b, err := enc.AppendBatch(nil, device, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seqRange(lo, hi uint64) []uint64 {
	var s []uint64
	for i := lo; i <= hi; i++ {
		s = append(s, i)
	}
	return s
}

func TestTailLiveWithGaps(t *testing.T) {
	b := broker.StartMochi(t)
	code, stdout, stderr := tailStart(t, "--broker", b.URL(), "--fleet", "met", "--gaps", "--count", "101", "--for", "30s")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "subscribed to") {
		if time.Now().After(deadline) {
			t.Fatalf("tail never subscribed; stderr: %s", stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}

	cl := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("tail-test-device"))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer cl.Disconnect(0)
	pub := func(topic string, payload []byte) {
		t.Helper()
		if tok := cl.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	tele := wire.Topic("met", "bwc-1", "telemetry")
	pub(wire.Topic("other", "bwc-9", "telemetry"), tailBatch(t, "bwc-9", 1, 1, 2, 3)) // another fleet: not ours
	pub(tele, tailBatch(t, "bwc-1", 3, seqRange(1, 40)...))
	pub(tele, tailBatch(t, "bwc-1", 3, seqRange(36, 40)...)) // resent after a lost PUBACK
	pub(tele, tailBatch(t, "bwc-1", 3, seqRange(51, 100)...))
	pub(wire.Topic("met", "bwc-1", "events"), tailBatch(t, "bwc-1", 4, seqRange(120, 130)...))

	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d; stderr: %s", c, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("tail did not exit after --count; stdout: %s", stdout)
	}

	seen := map[uint64]bool{}
	var reports []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		if m["kind"] == "gaps" {
			reports = append(reports, m)
			continue
		}
		if m["device"] != "bwc-1" {
			t.Errorf("record from outside the filter: %s", line)
		}
		seq := uint64(m["seq"].(float64))
		if seen[seq] {
			t.Errorf("seq %d printed twice", seq)
		}
		seen[seq] = true
	}
	if len(seen) != 101 {
		t.Errorf("%d distinct records printed, want 101", len(seen))
	}
	if len(reports) != 2 {
		t.Fatalf("gap reports %v, want one per boot", reports)
	}
	b3, _ := json.Marshal(reports[0])
	b4, _ := json.Marshal(reports[1])
	if want := `{"boot":3,"device":"bwc-1","duplicates":5,"first":1,"kind":"gaps","last":100,"missing":[[41,50]],"received":90}`; string(b3) != want {
		t.Errorf("boot 3 report\n got %s\nwant %s", b3, want)
	}
	if want := `{"before":[101,119],"boot":4,"device":"bwc-1","duplicates":0,"first":120,"kind":"gaps","last":130,"missing":[],"received":11}`; string(b4) != want {
		t.Errorf("boot 4 report\n got %s\nwant %s", b4, want)
	}
}

func TestTailUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tail"}, 2, "--broker is required"},
		{[]string{"tail", "--broker", "tcp://198.51.100.1:1883"}, 2, "non-loopback"},
		{[]string{"tail", "--broker", "tcp://127.0.0.1:1", "--fleet", "a/b"}, 2, "--fleet"},
		{[]string{"tail", "--broker", "tcp://127.0.0.1:1", "--cert", "c.pem"}, 2, "go together"},
		{[]string{"tail", "-h"}, 0, "--gaps"},
		{[]string{"tail", "--broker", "tcp://127.0.0.1:1", "--for", "300ms"}, 1, "never connected"},
	} {
		var out, errb tailBuf
		c := dispatch(tc.args, stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
		if c != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, c, errb.String(), tc.code, tc.want)
		}
	}
}

func TestTailRangesMatchASet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var sr tailRanges
		set := map[uint64]bool{}
		for range r.IntN(60) {
			s := uint64(r.IntN(40))
			if got, want := sr.insert(s), !set[s]; got != want {
				t.Fatalf("round %d: insert(%d) = %v, want %v", round, s, got, want)
			}
			set[s] = true
		}
		// The ranges must cover exactly the set, sorted and non-adjacent.
		n := 0
		for i, rg := range sr.r {
			if rg[0] > rg[1] || i > 0 && sr.r[i-1][1]+1 >= rg[0] {
				t.Fatalf("round %d: bad ranges %v", round, sr.r)
			}
			for s := rg[0]; s <= rg[1]; s++ {
				if !set[s] {
					t.Fatalf("round %d: %d in ranges %v but never added", round, s, sr.r)
				}
				n++
			}
		}
		if n != len(set) {
			t.Fatalf("round %d: ranges %v cover %d seqs, added %d", round, sr.r, n, len(set))
		}
	}
}
