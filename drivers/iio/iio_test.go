package iio_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/iio"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
)

// lis3dhScale is the st_accel driver's in_accel_scale for an LIS3DH at
// ±2 g: 1 mg per count of the 10-bit left-justified value, in m/s².
const lis3dhScale = "0.009576806"

func run(t *testing.T, root string, opts iio.Options) (chan kestrel.Record, func()) {
	t.Helper()
	recs := make(chan kestrel.Record, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- iio.New(root, opts).Run(ctx, func(r kestrel.Record) { recs <- r }) }()
	return recs, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestAccelSamples(t *testing.T) {
	tr, err := fakesysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.AddAccel("bmp280", "1"); err != nil { // not an accelerometer by name, but has accel files
		t.Fatal(err)
	}
	dev, err := tr.AddAccel("lis3dh", lis3dhScale)
	if err != nil {
		t.Fatal(err)
	}
	// At rest, flat: 1 g on Z (1024 counts).
	if err := tr.SetAccel(dev, -3, 5, 1024); err != nil {
		t.Fatal(err)
	}
	recs, stop := run(t, tr.Root, iio.Options{Device: "lis3dh", Rate: 50})
	defer stop()
	r := <-recs
	a := r.Body.(*kestrel.Accel)
	if *a != (kestrel.Accel{X: -29, Y: 48, Z: 9807}) {
		t.Fatalf("sample %+v, want 1 g on Z in mm/s²", *a)
	}
	if r.Priority != kestrel.PriorityBulk {
		t.Fatalf("priority %v", r.Priority)
	}
	if f, _ := tr.Read(dev + "/sampling_frequency"); strings.TrimSpace(f) != "50" {
		t.Fatalf("sampling_frequency %q, want 50", f)
	}
}

func TestPerAxisScaleAndOffset(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	dev, _ := tr.AddAccel("mma8452", "0.1")
	tr.Write(dev+"/in_accel_z_scale", "0.002")
	tr.Write(dev+"/in_accel_x_offset", "10")
	tr.SetAccel(dev, 5, 0, 1000)
	recs, stop := run(t, tr.Root, iio.Options{Rate: 100})
	defer stop()
	a := (<-recs).Body.(*kestrel.Accel)
	if *a != (kestrel.Accel{X: 1500, Y: 0, Z: 2000}) {
		t.Fatalf("got %+v", *a)
	}
}

func TestNoDevice(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	tr.AddAccel("lis3dh", lis3dhScale)
	err := iio.New(tr.Root, iio.Options{Device: "adxl345"}).Run(context.Background(), func(kestrel.Record) {})
	if !errors.Is(err, iio.ErrNoDevice) {
		t.Fatalf("got %v", err)
	}
}

// TestUnplugged: the accelerometer's directory goes while the driver holds
// its attributes open; Run must report the device gone, not keep
// sampling an unlinked file.
func TestUnplugged(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	dev, _ := tr.AddAccel("lis3dh", lis3dhScale)
	tr.SetAccel(dev, 0, 0, 1024)
	done := make(chan error, 1)
	got := make(chan struct{}, 1)
	go func() {
		done <- iio.New(tr.Root, iio.Options{Rate: 200}).Run(context.Background(), func(kestrel.Record) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
	}()
	<-got
	if err := tr.Remove(dev); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "device gone") {
			t.Fatalf("Run returned %v, want device gone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept going after the device was removed")
	}
}

// TestValuesFollowWrites: the driver holds the attributes open, so each new
// value must come through the same files (sysfs regenerates on read).
func TestValuesFollowWrites(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	dev, _ := tr.AddAccel("lis3dh", "1")
	tr.SetAccel(dev, 123456, -7, 0)
	recs, stop := run(t, tr.Root, iio.Options{Rate: 200})
	defer stop()
	for _, want := range [][3]int{{1, 2, 3}, {-40000, 5, 99999}, {0, 0, 0}} {
		tr.SetAccel(dev, want[0], want[1], want[2])
		deadline := time.After(3 * time.Second)
		for {
			var r kestrel.Record
			select {
			case r = <-recs:
			case <-deadline:
				t.Fatalf("never saw %v", want)
			}
			a := r.Body.(*kestrel.Accel)
			if *a == (kestrel.Accel{X: int32(want[0] * 1000), Y: int32(want[1] * 1000), Z: int32(want[2] * 1000)}) {
				break
			}
		}
	}
}
