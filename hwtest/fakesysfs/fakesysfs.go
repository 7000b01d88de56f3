// Package fakesysfs builds fake Linux sysfs trees for sensor drivers:
// IIO accelerometers (/sys/bus/iio/devices), power_supply batteries
// (/sys/class/power_supply) and thermal zones (/sys/class/thermal).
//
// File names, units and formats follow the kernel's ABI documents
// (Documentation/ABI/testing/sysfs-bus-iio, sysfs-class-power,
// sysfs-class-thermal): raw accelerometer counts with a scale in m/s² per
// count, battery voltage in µV and temperature in tenths of °C, thermal
// zone temperatures in millidegrees Celsius. Each value is written to a
// temporary file and renamed, so a reader never sees half a value, as with
// the kernel's own attribute reads.
package fakesysfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Tree is a fake sysfs root, normally a test's temporary directory.
type Tree struct {
	Root string
	nIIO int
	nTZ  int
}

// New makes a tree under root (created if missing).
func New(root string) (*Tree, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("fakesysfs: %w", err)
	}
	return &Tree{Root: root}, nil
}

// Write sets one attribute, path relative to the root, atomically.
func (t *Tree) Write(rel, value string) error {
	p := filepath.Join(t.Root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("fakesysfs: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("fakesysfs: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("fakesysfs: %w", err)
	}
	return nil
}

// Read returns one attribute as the tree holds it (trailing newline kept).
func (t *Tree) Read(rel string) (string, error) {
	b, err := os.ReadFile(filepath.Join(t.Root, rel))
	return string(b), err
}

func (t *Tree) writeAll(dir string, kv [][2]string) error {
	for _, e := range kv {
		if err := t.Write(filepath.Join(dir, e[0]), e[1]); err != nil {
			return err
		}
	}
	return nil
}

// AddAccel adds an IIO accelerometer named name (the "name" attribute,
// e.g. "lis3dh") with a shared in_accel_scale, and returns its directory
// relative to the root (bus/iio/devices/iio:deviceN).
func (t *Tree) AddAccel(name, scale string) (string, error) {
	dir := filepath.Join("bus/iio/devices", "iio:device"+strconv.Itoa(t.nIIO))
	t.nIIO++
	err := t.writeAll(dir, [][2]string{
		{"name", name},
		{"in_accel_scale", scale},
		{"in_accel_x_raw", "0"}, {"in_accel_y_raw", "0"}, {"in_accel_z_raw", "0"},
		{"sampling_frequency", "10"},
		{"sampling_frequency_available", "1 10 25 50 100 200 400"},
	})
	return dir, err
}

// SetAccel sets the raw counts of the three axes.
func (t *Tree) SetAccel(dir string, x, y, z int) error {
	return t.writeAll(dir, [][2]string{
		{"in_accel_x_raw", strconv.Itoa(x)}, {"in_accel_y_raw", strconv.Itoa(y)}, {"in_accel_z_raw", strconv.Itoa(z)},
	})
}

// Battery is a power_supply battery's attributes, in sysfs units.
type Battery struct {
	Capacity  int    // percent
	Status    string // Charging, Discharging, Full, Not charging, Unknown
	VoltageUV int    // voltage_now, µV
	TempDeciC *int   // temp, tenths of °C; nil leaves the file out
}

// AddBattery adds class/power_supply/<name> of type Battery.
func (t *Tree) AddBattery(name string, b Battery) error {
	dir := filepath.Join("class/power_supply", name)
	if err := t.writeAll(dir, [][2]string{{"type", "Battery"}, {"present", "1"}}); err != nil {
		return err
	}
	return t.SetBattery(name, b)
}

// AddMains adds a mains supply, which battery drivers must skip.
func (t *Tree) AddMains(name string, online bool) error {
	v := "0"
	if online {
		v = "1"
	}
	return t.writeAll(filepath.Join("class/power_supply", name), [][2]string{{"type", "Mains"}, {"online", v}})
}

// SetBattery updates a battery's attributes.
func (t *Tree) SetBattery(name string, b Battery) error {
	dir := filepath.Join("class/power_supply", name)
	kv := [][2]string{
		{"capacity", strconv.Itoa(b.Capacity)},
		{"status", b.Status},
		{"voltage_now", strconv.Itoa(b.VoltageUV)},
	}
	if b.TempDeciC != nil {
		kv = append(kv, [2]string{"temp", strconv.Itoa(*b.TempDeciC)})
	} else {
		_ = os.Remove(filepath.Join(t.Root, dir, "temp"))
	}
	return t.writeAll(dir, kv)
}

// AddThermalZone adds class/thermal/thermal_zoneN with a type and a
// temperature in m°C, and returns N.
func (t *Tree) AddThermalZone(typ string, milliC int) (int, error) {
	n := t.nTZ
	t.nTZ++
	dir := filepath.Join("class/thermal", "thermal_zone"+strconv.Itoa(n))
	return n, t.writeAll(dir, [][2]string{{"type", typ}, {"temp", strconv.Itoa(milliC)}, {"mode", "enabled"}})
}

// SetThermal sets zone n's temperature in m°C.
func (t *Tree) SetThermal(n, milliC int) error {
	return t.Write(filepath.Join("class/thermal", "thermal_zone"+strconv.Itoa(n), "temp"), strconv.Itoa(milliC))
}

// Remove deletes an attribute, as when a device is unplugged.
func (t *Tree) Remove(rel string) error {
	return os.RemoveAll(filepath.Join(t.Root, rel))
}
