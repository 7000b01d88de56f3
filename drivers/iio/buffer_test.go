package iio_test

import (
	"context"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/iio"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
)

// bufferedDevice adds a buffered accelerometer with its character device
// in a temporary directory, which it returns.
func bufferedDevice(t *testing.T, name, scale, typ string) (*fakesysfs.Tree, *fakesysfs.BufferedAccel, string) {
	t.Helper()
	tr, _ := fakesysfs.New(t.TempDir())
	devDir := t.TempDir()
	b, err := tr.AddBufferedAccel(name, scale, typ, devDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return tr, b, devDir
}

// waitEnabled waits until the driver has enabled the buffer.
func waitEnabled(t *testing.T, tr *fakesysfs.Tree, b *fakesysfs.BufferedAccel) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, _ := tr.Read(b.Dir + "/buffer/enable"); strings.TrimSpace(s) == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("driver never enabled the buffer")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBufferedReadsBatches(t *testing.T) {
	for _, c := range []struct {
		name, typ string
		// raw counts as the part reports them, and what they scale to
		raw  [3]int
		want kestrel.Accel
	}{
		// LIS3DH: 12 bits in 16, little-endian, left-justified (>>4).
		{"lis3dh", "le:s12/16>>4", [3]int{-512, 100, 1000}, kestrel.Accel{X: -5021, Y: 981, Z: 9807}},
		// MMA8452: 14 bits in 16, big-endian, >>2.
		{"mma8452", "be:s14/16>>2", [3]int{-8000, 1, 4095}, kestrel.Accel{X: -78453, Y: 10, Z: 40158}},
		// A 16-bit part in 32-bit storage, no shift.
		{"bmi", "le:s16/32>>0", [3]int{-32768, 32767, 0}, kestrel.Accel{X: -321343, Y: 321333, Z: 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, b, devDir := bufferedDevice(t, c.name, "0.0098066", c.typ)
			recs, stop := run(t, tr.Root, iio.Options{Rate: 50, DevRoot: devDir, Batch: 200 * time.Millisecond})
			defer stop()
			waitEnabled(t, tr, b)
			for _, attr := range []string{"buffer/watermark", "trigger/current_trigger", "scan_elements/in_timestamp_en", "buffer/length"} {
				v, _ := tr.Read(b.Dir + "/" + attr)
				t.Logf("%s = %s", attr, strings.TrimSpace(v))
			}
			if wm := b.Watermark(); wm != 10 {
				t.Fatalf("watermark %d, want 10 (50 Hz × 200 ms)", wm)
			}
			if trig, _ := tr.Read(b.Dir + "/trigger/current_trigger"); strings.TrimSpace(trig) != c.name+"-trigger" {
				t.Fatalf("trigger %q, want the device's own", trig)
			}
			base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
			var batch [][3]int
			var ts []int64
			for i := range 10 {
				batch = append(batch, c.raw)
				ts = append(ts, base.Add(time.Duration(i)*20*time.Millisecond).UnixNano())
			}
			if err := b.Write(batch, ts); err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				select {
				case r := <-recs:
					a := r.Body.(*kestrel.Accel)
					if *a != c.want {
						t.Fatalf("sample %d: got %+v, want %+v", i, *a, c.want)
					}
					if want := base.Add(time.Duration(i) * 20 * time.Millisecond).UnixMilli(); r.Time != want {
						t.Fatalf("sample %d time %d, want the scan's timestamp %d", i, r.Time, want)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("only %d of 10 samples", i)
				}
			}
		})
	}
}

// A scan split across reads (a FIFO may return part of one) is put
// together, not misread.
func TestBufferedPartialScan(t *testing.T) {
	tr, b, devDir := bufferedDevice(t, "lis3dh", "1", "le:s12/16>>4")
	recs, stop := run(t, tr.Root, iio.Options{Rate: 10, DevRoot: devDir})
	defer stop()
	waitEnabled(t, tr, b)
	for i := range 3 {
		if err := b.Write([][3]int{{i, -i, 7}}, []int64{int64(i+1) * 1e9}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		select {
		case r := <-recs:
			a := r.Body.(*kestrel.Accel)
			if a.X != int32(i*1000) || a.Y != int32(-i*1000) || a.Z != 7000 || r.Time != int64(i+1)*1000 {
				t.Fatalf("sample %d: %+v at %d", i, *a, r.Time)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("timeout")
		}
	}
}

// Without a character device the driver polls sysfs; with Poll it polls
// even where a buffer exists, and leaves the buffer off.
func TestBufferFallsBackToPolling(t *testing.T) {
	tr, b, devDir := bufferedDevice(t, "lis3dh", "1", "le:s12/16>>4")
	tr.SetAccel(b.Dir, 1, 2, 3)
	for _, opts := range []iio.Options{
		{Rate: 100, DevRoot: t.TempDir()}, // no /dev/iio:device0 there
		{Rate: 100, DevRoot: devDir, Poll: true},
	} {
		recs, stop := run(t, tr.Root, opts)
		select {
		case r := <-recs:
			if a := r.Body.(*kestrel.Accel); *a != (kestrel.Accel{X: 1000, Y: 2000, Z: 3000}) {
				t.Fatalf("polled %+v", *a)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no polled sample")
		}
		stop()
		if s, _ := tr.Read(b.Dir + "/buffer/enable"); strings.TrimSpace(s) != "0" {
			t.Fatalf("buffer left enabled (%q) while polling", s)
		}
	}
}

// Unplugging the device ends Run with an error (the agent restarts it),
// and the buffer is switched off on the way out.
func TestBufferedDeviceGone(t *testing.T) {
	tr, b, devDir := bufferedDevice(t, "lis3dh", "1", "le:s12/16>>4")
	done := make(chan error, 1)
	go func() {
		done <- iio.New(tr.Root, iio.Options{Rate: 50, DevRoot: devDir}).Run(context.Background(), func(kestrel.Record) {})
	}()
	waitEnabled(t, tr, b)
	b.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil after the device went")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not notice the device going")
	}
	if s, _ := tr.Read(b.Dir + "/buffer/enable"); strings.TrimSpace(s) != "0" {
		t.Fatalf("buffer left enabled: %q", s)
	}
}
