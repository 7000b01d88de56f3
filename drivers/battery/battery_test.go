package battery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/battery"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
)

func ptr[T any](v T) *T { return &v }

func TestBattery(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	if err := tr.AddMains("AC", true); err != nil {
		t.Fatal(err)
	}
	b := fakesysfs.Battery{Capacity: 80, Status: "Discharging", VoltageUV: 3851200, TempDeciC: ptr(253)}
	if err := tr.AddBattery("BAT0", b); err != nil {
		t.Fatal(err)
	}
	recs := make(chan kestrel.Record, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- battery.New(tr.Root, battery.Options{Period: 20 * time.Millisecond}).Run(ctx, func(r kestrel.Record) { recs <- r })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	r := <-recs
	want := kestrel.Battery{Capacity: 80, Status: "Discharging", VoltageMV: 3851, TempDeciC: 253, HasTemp: true}
	if *r.Body.(*kestrel.Battery) != want || r.Priority != kestrel.PriorityNormal {
		t.Fatalf("got %+v", r)
	}
	// 20 mV of noise: no record.
	b.VoltageUV = 3831000
	tr.SetBattery("BAT0", b)
	select {
	case r := <-recs:
		t.Fatalf("record for noise: %+v", r.Body)
	case <-time.After(150 * time.Millisecond):
	}
	// Plugged in: status changes, temperature sensor gone. The attributes
	// change one at a time, as in sysfs, so a read in between may report
	// a half-changed battery first.
	b.Status, b.TempDeciC = "Charging", nil
	tr.SetBattery("BAT0", b)
	want = kestrel.Battery{Capacity: 80, Status: "Charging", VoltageMV: 3831}
	deadline := time.After(3 * time.Second)
	for got := false; !got; {
		select {
		case r = <-recs:
			got = *r.Body.(*kestrel.Battery) == want
		case <-deadline:
			t.Fatalf("no record %+v", want)
		}
	}
}

func TestHeartbeat(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	tr.AddBattery("bq27546-0", fakesysfs.Battery{Capacity: 55, Status: "Full", VoltageUV: 4200000})
	recs := make(chan kestrel.Record, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- battery.New(tr.Root, battery.Options{Period: 10 * time.Millisecond, Heartbeat: 50 * time.Millisecond}).Run(ctx, func(r kestrel.Record) {
			select {
			case recs <- r:
			default:
			}
		})
	}()
	defer func() { cancel(); <-done }()
	a, b := <-recs, <-recs
	if *a.Body.(*kestrel.Battery) != *b.Body.(*kestrel.Battery) || b.Time < a.Time {
		t.Fatalf("heartbeat %+v then %+v", a, b)
	}
}

func TestNoBattery(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	tr.AddMains("AC", true)
	err := battery.New(tr.Root, battery.Options{}).Run(context.Background(), func(kestrel.Record) {})
	if !errors.Is(err, battery.ErrNoBattery) {
		t.Fatalf("got %v", err)
	}
}
