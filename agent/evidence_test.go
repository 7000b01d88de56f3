package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"os"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
)

// TestEvidenceChainAcrossBoots runs the real agent on a real hike replayed
// at 50 times its speed, with an emergency, then restarts it and emits
// more: everything the platform received, put in a bundle, verifies, with
// checkpoints for records, emergency, boot and shutdown; altering one
// received position fails it.
func TestEvidenceChainAcrossBoots(t *testing.T) {
	b := broker.StartMochi(t)
	track, err := os.ReadFile("../transport/wire/testdata/tracks/korita-zbevnica-hike.nmea")
	if err != nil {
		t.Fatal(err)
	}
	want := len(readFixes(t, "../transport/wire/testdata/tracks/korita-zbevnica-hike.fixes.jsonl"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	plat, err := platform.Subscribe(ctx, platform.Options{URL: b.URL(), Fleet: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer plat.Close()
	count := func(k kestrel.Kind) int {
		n := 0
		for _, a := range plat.Unique() {
			if a.Record.Kind() == k {
				n++
			}
		}
		return n
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	sim, err := gpssim.New(gpssim.Config{Log: track, Baud: 115200, Speed: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := testConfig(t, b.URL(), sim.Path())
	cfg.GPS.Baud = 115200
	cfg.Evidence.CheckpointRecords = 100
	a, err := agent.New(cfg, agent.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pub := a.Identity().Public()
	run := func(a *agent.Agent, until func() bool, during func()) {
		t.Helper()
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		during()
		if err := plat.WaitFor(ctx, func(*platform.Platform) bool { return until() }); err != nil {
			t.Fatalf("platform: %v (positions %d, checkpoints %d)", err, count(kestrel.KindPosition), count(kestrel.KindCheckpoint))
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("agent run: %v", err)
		}
		a.Close()
	}
	run(a, func() bool { return count(kestrel.KindPosition) >= want }, func() {
		if err := sim.WaitOpen(ctx); err != nil {
			t.Fatalf("agent never opened the GPS port: %v", err)
		}
		go sim.Run(ctx)
		time.Sleep(time.Second)
		a.Emit(kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "button"}})
	})
	// Wait for boot 1's shutdown checkpoint, sent in the drain.
	if err := plat.WaitFor(ctx, func(p *platform.Platform) bool { return hasReason(p, kestrel.CheckpointShutdown) }); err != nil {
		t.Fatalf("no shutdown checkpoint: %v", err)
	}

	cfg.GPS.Port = ""
	a2, err := agent.New(cfg, agent.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	before := count(kestrel.KindPosition)
	run(a2, func() bool { return count(kestrel.KindPosition) >= before+150 }, func() {
		for i := range 150 {
			a2.Emit(kestrel.Record{Envelope: kestrel.Envelope{Time: time.Now().UnixMilli() + int64(i)},
				Body: &kestrel.Position{Lat: 453000000 + int32(i), Lon: 138000000, Mode: kestrel.Fix2D}})
		}
	})
	if err := plat.WaitFor(ctx, func(p *platform.Platform) bool {
		n := 0
		for _, a := range p.Unique() {
			if c, ok := a.Record.Body.(*kestrel.Checkpoint); ok && c.Reason == kestrel.CheckpointShutdown {
				n++
			}
		}
		return n == 2
	}); err != nil {
		t.Fatalf("no second shutdown checkpoint: %v", err)
	}

	recs := received(plat)
	reasons := map[kestrel.CheckpointReason]int{}
	for _, r := range recs {
		if c, ok := r.Body.(*kestrel.Checkpoint); ok {
			reasons[c.Reason]++
		}
	}
	if reasons[kestrel.CheckpointBoot] != 2 || reasons[kestrel.CheckpointEmergency] != 1 || reasons[kestrel.CheckpointRecords] < 5 {
		t.Errorf("checkpoints by reason %v", reasons)
	}
	rep := verifyRecords(t, pub, recs)
	if !rep.OK() || rep.Proven != len(recs) {
		t.Fatalf("clean run: %s", rep.Summary())
	}
	t.Logf("%s", rep.Summary())
	for i := range recs {
		if p, ok := recs[i].Body.(*kestrel.Position); ok && i > len(recs)/2 {
			q := *p
			q.Lon++
			recs[i].Body = &q
			break
		}
	}
	if rep := verifyRecords(t, pub, recs); rep.OK() || rep.Problems[0].Kind != "altered" {
		t.Fatalf("altered position not caught: %s", rep.Summary())
	}
}

func hasReason(p *platform.Platform, reason kestrel.CheckpointReason) bool {
	for _, a := range p.Unique() {
		if c, ok := a.Record.Body.(*kestrel.Checkpoint); ok && c.Reason == reason {
			return true
		}
	}
	return false
}

// received is what the platform got, in seq order.
func received(p *platform.Platform) []kestrel.Record {
	var recs []kestrel.Record
	for _, a := range p.Unique() {
		recs = append(recs, a.Record)
	}
	for i := 1; i < len(recs); i++ {
		for j := i; j > 0 && recs[j].Seq < recs[j-1].Seq; j-- {
			recs[j], recs[j-1] = recs[j-1], recs[j]
		}
	}
	return recs
}

func verifyRecords(t *testing.T, pub []byte, recs []kestrel.Record) *evidence.Report {
	t.Helper()
	var w bytes.Buffer
	if err := evidence.WriteHeader(&w, evidence.Header{Device: "car-17", DeviceKey: b64(pub)}); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := range recs {
		var err error
		if buf, err = evidence.WriteRecord(&w, &recs[i], buf); err != nil {
			t.Fatal(err)
		}
	}
	bd, err := evidence.ReadBundle(&w)
	if err != nil {
		t.Fatal(err)
	}
	return evidence.Verify(bd, nil)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
