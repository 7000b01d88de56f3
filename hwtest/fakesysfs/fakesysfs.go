// Package fakesysfs builds fake Linux sysfs trees for sensor drivers:
// IIO accelerometers (/sys/bus/iio/devices), power_supply batteries
// (/sys/class/power_supply) and thermal zones (/sys/class/thermal).
//
// File names, units and formats follow the kernel's ABI documents
// (Documentation/ABI/testing/sysfs-bus-iio, sysfs-class-power,
// sysfs-class-thermal): raw accelerometer counts with a scale in m/s² per
// count, battery voltage in µV and temperature in tenths of °C, thermal
// zone temperatures in millidegrees Celsius.
//
// An attribute is one file for its whole life, as in sysfs, so a driver may
// hold it open and read it again at offset 0. A new value is written in
// place over the old one and the file then cut to its length: a reader
// between the two sees the new value's first token followed by leftover
// bytes, which the drivers ignore (they read the first token). Remove
// empties the attributes before deleting them, so that a reader holding
// them open sees the device go, as sysfs readers get ENODEV.
package fakesysfs

import (
	"fmt"
	"io/fs"
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

// Write sets one attribute, path relative to the root, in place.
func (t *Tree) Write(rel, value string) error {
	p := filepath.Join(t.Root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("fakesysfs: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("fakesysfs: %w", err)
	}
	b := []byte(value + "\n")
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fakesysfs: %s: %w", rel, err)
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

// Remove deletes an attribute or a device directory, as when a device is
// unplugged: every file is emptied first, so that a driver holding one open
// reads nothing from then on.
func (t *Tree) Remove(rel string) error {
	root := filepath.Join(t.Root, rel)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Truncate(p, 0)
		}
		return nil
	})
	return os.RemoveAll(root)
}
