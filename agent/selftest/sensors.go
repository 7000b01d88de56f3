package selftest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/drivers/battery"
	"github.com/kestrel-edge/kestrel/drivers/gpio"
	"github.com/kestrel-edge/kestrel/drivers/iio"
	"github.com/kestrel-edge/kestrel/drivers/thermal"
)

// sample runs a sysfs source briefly, through the same driver the agent
// runs, and returns the records of its first reading.
func sample(src interface {
	Run(context.Context, func(kestrel.Record)) error
}, d time.Duration, enough func([]kestrel.Record) bool) ([]kestrel.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var recs []kestrel.Record
	err := src.Run(ctx, func(r kestrel.Record) {
		mu.Lock()
		defer mu.Unlock()
		recs = append(recs, r)
		if enough(recs) {
			cancel()
		}
	})
	mu.Lock()
	defer mu.Unlock()
	return recs, err
}

const standardGravity = 9.80665 // m/s²

func checkAccel(c config.Sensors) Result {
	if c.AccelRate <= 0 {
		return skip("not configured (sensors.accel_rate = 0)")
	}
	a := iio.New(c.SysfsRoot, iio.Options{Rate: c.AccelRate})
	dir, err := a.Find()
	if err != nil {
		return fail(fmt.Sprintf("no IIO accelerometer under %s", filepath.Join(c.SysfsRoot, "bus/iio/devices")),
			"is the driver loaded (dmesg, ls /sys/bus/iio/devices)? or set sensors.accel_rate = 0 if none is fitted")
	}
	name, _ := os.ReadFile(filepath.Join(dir, "name"))
	who := strings.TrimSpace(string(name)) + " (" + filepath.Base(dir) + ")"
	recs, err := sample(a, time.Second+time.Duration(float64(time.Second)/c.AccelRate), func(r []kestrel.Record) bool { return len(r) > 0 })
	var ac *kestrel.Accel
	for _, r := range recs {
		if x, ok := r.Body.(*kestrel.Accel); ok {
			ac = x
			break
		}
	}
	if ac == nil {
		if err == nil {
			err = errors.New("no sample within a second")
		}
		return fail(fmt.Sprintf("%s cannot be read: %v", who, err), "check the driver and the in_accel_* files' permissions")
	}
	x, y, z := float64(ac.X)/1000, float64(ac.Y)/1000, float64(ac.Z)/1000
	g := math.Sqrt(x*x+y*y+z*z) / standardGravity
	detail := fmt.Sprintf("%s reads %.2f, %.2f, %.2f m/s² (%.2f g) at %g Hz", who, x, y, z, g, c.AccelRate)
	if g < 0.5 || g > 1.5 {
		// At rest an accelerometer feels 1 g; far from it means a wrong
		// scale or a dead part, unless the vehicle is moving hard.
		return warn(detail, "at rest it should read about 1 g (9.8 m/s²): check in_accel_scale, or repeat with the vehicle still")
	}
	return pass(detail)
}

func checkBattery(c config.Sensors) Result {
	if c.BatteryPeriod.Duration <= 0 {
		return skip("not configured (sensors.battery_period = 0)")
	}
	s := battery.New(c.SysfsRoot, battery.Options{})
	dir, err := s.Find()
	if err != nil {
		if errors.Is(err, battery.ErrNoBattery) || errors.Is(err, fs.ErrNotExist) {
			return Result{Status: Skip, Detail: "no battery found (none fitted?)",
				Hint: "if this device has one, check its fuel gauge driver: ls /sys/class/power_supply"}
		}
		return fail(err.Error(), "check "+filepath.Join(c.SysfsRoot, "class/power_supply"))
	}
	b, err := battery.Read(dir)
	if err != nil {
		return fail(fmt.Sprintf("%s cannot be read: %v", filepath.Base(dir), err), "check the fuel gauge driver (dmesg)")
	}
	detail := fmt.Sprintf("%s: %d%%, %s", filepath.Base(dir), b.Capacity, b.Status)
	if b.VoltageMV > 0 {
		detail += fmt.Sprintf(", %.2f V", float64(b.VoltageMV)/1000)
	}
	if b.HasTemp {
		detail += fmt.Sprintf(", %.1f °C", float64(b.TempDeciC)/10)
	}
	if b.Capacity < 20 && b.Status != "Charging" && b.Status != "Full" {
		return warn(detail, "low battery: charge it before deployment")
	}
	return pass(detail)
}

func checkThermal(c config.Sensors) Result {
	if c.ThermalPeriod.Duration <= 0 {
		return skip("not configured (sensors.thermal_period = 0)")
	}
	zones, _ := filepath.Glob(filepath.Join(c.SysfsRoot, "class/thermal/thermal_zone*"))
	if len(zones) == 0 {
		return Result{Status: Skip, Detail: "no thermal zone found",
			Hint: "if this device has temperature sensors, check their drivers: ls /sys/class/thermal"}
	}
	recs, err := sample(thermal.New(c.SysfsRoot, thermal.Options{Period: time.Hour}), time.Second,
		func(r []kestrel.Record) bool { return len(r) >= len(zones) })
	if len(recs) == 0 {
		if err == nil {
			err = errors.New("no zone could be read")
		}
		return fail(err.Error(), "check the thermal drivers (dmesg)")
	}
	var parts []string
	hot := false
	for _, r := range recs {
		if t, ok := r.Body.(*kestrel.Thermal); ok {
			parts = append(parts, fmt.Sprintf("%s %.1f °C", t.Zone, float64(t.MilliC)/1000))
			hot = hot || t.MilliC >= 85000
		}
	}
	sort.Strings(parts)
	detail := strings.Join(parts, ", ")
	if len(recs) < len(zones) {
		return warn(fmt.Sprintf("%s; %d of %d zones unreadable", detail, len(zones)-len(recs), len(zones)), "some sensors may be powered down; check dmesg")
	}
	if hot {
		return warn(detail, "running hot: check ventilation and mounting away from heat")
	}
	return pass(detail)
}

// checkGPIO reads the start-up level of every configured input line.
// It requests the lines, so it cannot run beside an agent holding them.
func checkGPIO(c config.GPIO, o *Options) []Result {
	if len(c.Lines) == 0 {
		return []Result{skip("not configured (no gpio.lines)")}
	}
	if o.inUse("gpio") {
		return []Result{skip("the lines are held by the running agent; see its input events")}
	}
	lines := make([]gpio.LineConfig, len(c.Lines))
	for i, l := range c.Lines {
		lines[i] = gpio.LineConfig{Name: l.Name, Chip: l.Chip, Offset: uint32(l.Offset), ActiveLow: l.ActiveLow}
		p := filepath.Join(c.DevRoot, l.Chip)
		if _, err := os.Stat(p); err != nil {
			return []Result{fail(fmt.Sprintf("gpio.lines[%d] (%s): %s: %v", i, l.Name, p, errors.Unwrap(err)),
				"check the chip name: ls /dev/gpiochip*; gpiodetect shows their labels")}
		}
	}
	recs, err := sample(gpio.New(c.DevRoot, lines, gpio.Options{}), time.Second,
		func(r []kestrel.Record) bool { return len(r) >= len(lines) })
	if len(recs) < len(lines) {
		if err == nil {
			err = errors.New("no levels read")
		}
		hint := "check chip and offset (gpioinfo); a line held by another program (or the running agent) cannot be read"
		return []Result{fail(err.Error(), hint)}
	}
	var parts []string
	for _, r := range recs {
		if ev, ok := r.Body.(*kestrel.Event); ok {
			v := "off"
			if ev.Value != 0 {
				v = "on"
			}
			parts = append(parts, ev.Name+" "+v)
		}
	}
	return []Result{pass("inputs read: " + strings.Join(parts, ", "))}
}
