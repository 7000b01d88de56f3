package spool

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// steadyClock is a monotonic clock the test moves by hand.
type steadyClock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *steadyClock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

func (c *steadyClock) Add(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

// A device without an RTC boots in 1970, spools, and then NTP steps its
// clock to 2026: nothing is evicted, in this run or after a reboot, while
// the age bound still holds on the device's own clock.
func TestClockStepFrom1970EvictsNothing(t *testing.T) {
	dir := t.TempDir()
	wall := &fakeClock{t: time.Unix(12, 0)} // 1970
	mono := &steadyClock{d: 5 * time.Second}
	o := Options{Now: wall.Now, Mono: mono.Mono, MaxAge: time.Hour, SyncInterval: time.Hour, SegmentBytes: 64 << 10}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, wall, kestrel.PriorityNormal, 20)
	s.syncOnce()
	mono.Add(time.Minute)
	wall.t = time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC) // the step
	s.expire()
	if m := s.Metrics(); m.Records != 20 || m.Evicted != 0 || m.OldestAge != time.Minute {
		t.Fatalf("after the clock step: %d records, %d evicted, oldest %v", m.Records, m.Evicted, m.OldestAge)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reboot: the monotonic clock starts again; the records' 1970 times
	// say nothing about their age, so they count from now.
	mono = &steadyClock{d: 3 * time.Second}
	o.Mono = mono.Mono
	s, err = Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.expire()
	if m := s.Metrics(); m.Records != 20 || m.Evicted != 0 {
		t.Fatalf("after reboot: %d records, %d evicted", m.Records, m.Evicted)
	}
	mono.Add(59 * time.Minute)
	s.expire()
	if m := s.Metrics(); m.Records != 20 {
		t.Fatalf("evicted before MaxAge on the device clock: %+v", m)
	}
	mono.Add(2 * time.Minute)
	s.expire()
	if m := s.Metrics(); m.Records != 0 || m.Evicted != 20 {
		t.Fatalf("MaxAge no longer bounds the spool: %d records, %d evicted", m.Records, m.Evicted)
	}
	s.Close()
}

// Across a reboot with a set clock, the records' wall times are honest:
// a record older than MaxAge by the clock before and after goes.
func TestAgeAcrossRebootWithSaneClock(t *testing.T) {
	dir := t.TempDir()
	wall := &fakeClock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	mono := &steadyClock{}
	o := Options{Now: wall.Now, Mono: mono.Mono, MaxAge: 24 * time.Hour, SyncInterval: time.Hour, SegmentBytes: 64 << 10}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := appendN(t, s, wall, kestrel.PriorityNormal, 5)
	wall.Add(36 * time.Hour) // switched off for a day and a half
	young := appendN(t, s, wall, kestrel.PriorityNormal, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.expire()
	got := seqsOf(s.Take(nil, 100, 0))
	if len(got) != len(young) || got[0] != young[0] {
		t.Fatalf("kept %v; want only %v (evicted %v)", got, young, old)
	}
}

func TestSetLimitsLive(t *testing.T) {
	dir := t.TempDir()
	mono := &steadyClock{}
	wall := newClock()
	o := Options{Now: wall.Now, Mono: mono.Mono, MaxBytes: 1 << 20, SyncInterval: time.Hour, SegmentBytes: 64 << 10}
	s, err := Open(dir, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("p"), 990)
	var tk Ticket
	for range 500 {
		q := s.NextSeq()
		if tk, err = s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: wall.Now().UnixMilli(), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	// A bound under four segments needs smaller segments: refused whole.
	if err := s.SetLimits(200<<10, time.Minute, 10*time.Millisecond); !errors.Is(err, ErrNeedsRestart) {
		t.Fatalf("max_bytes under four segments: %v, want ErrNeedsRestart", err)
	}
	if err := s.SetLimits(-1, 0, 0); err == nil || errors.Is(err, ErrNeedsRestart) {
		t.Fatalf("negative max_bytes: %v, want a plain error", err)
	}
	if m := s.Metrics(); m.MaxBytes != 1<<20 || m.Records != 500 {
		t.Fatalf("a refused change changed the spool: %+v", m)
	}
	// Shrinking evicts at once, by policy.
	if err := s.SetLimits(256<<10, 0, 0); err != nil {
		t.Fatal(err)
	}
	m := s.Metrics()
	if m.MaxBytes != 256<<10 || m.EmergencyBytes != 16<<10 || m.Bytes > 240<<10 || m.Evicted == 0 {
		t.Fatalf("after shrinking: %+v", m)
	}
	// The sync interval applies from the next tick: the pending group
	// (an hour away before) is written.
	if err := s.SetLimits(256<<10, 0, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tk.Durable():
	case <-time.After(20 * time.Second):
		t.Fatal("the new sync interval never took effect")
	}
	// The age bound applies at once.
	mono.Add(2 * time.Minute)
	if err := s.SetLimits(256<<10, time.Minute, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if m := s.Metrics(); m.Records != 0 {
		t.Fatalf("max_age not applied live: %d records left", m.Records)
	}
}
