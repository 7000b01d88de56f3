package thermal_test

import (
	"context"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/thermal"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
)

func TestThermalZones(t *testing.T) {
	tr, _ := fakesysfs.New(t.TempDir())
	cpu, _ := tr.AddThermalZone("cpu-thermal", 45000)
	tr.AddThermalZone("gpu-thermal", 40000)
	tr.AddThermalZone("pmic-thermal", 38000)
	tr.Write("class/thermal/cooling_device0/type", "cpufreq") // not a zone
	recs := make(chan kestrel.Record, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- thermal.New(tr.Root, thermal.Options{Period: 20 * time.Millisecond, Zones: []string{"cpu-thermal", "thermal_zone1"}}).
			Run(ctx, func(r kestrel.Record) { recs <- r })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	got := map[string]int32{}
	for range 2 {
		r := <-recs
		th := r.Body.(*kestrel.Thermal)
		got[th.Zone] = th.MilliC
	}
	if len(got) != 2 || got["cpu-thermal"] != 45000 || got["gpu-thermal"] != 40000 {
		t.Fatalf("first readings %v (pmic-thermal must be filtered out)", got)
	}
	tr.SetThermal(cpu, 45600) // under 1 °C
	select {
	case r := <-recs:
		t.Fatalf("record under hysteresis: %+v", r.Body)
	case <-time.After(150 * time.Millisecond):
	}
	tr.SetThermal(cpu, 47100)
	r := <-recs
	if th := r.Body.(*kestrel.Thermal); th.Zone != "cpu-thermal" || th.MilliC != 47100 {
		t.Fatalf("got %+v", th)
	}
}
