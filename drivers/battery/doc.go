// Package battery reads a Linux power_supply battery through sysfs.
//
// Standard: the kernel ABI, Documentation/ABI/testing/sysfs-class-power:
// type ("Battery"), capacity (percent), status (Charging, Discharging,
// Full, Not charging, Unknown), voltage_now (µV) and temp (tenths of a
// degree Celsius). Fuel gauges seen on body-worn cameras and gateways
// (TI bq27xxx, Maxim max17042, the axp20x PMIC) all publish these.
//
// It polls, and emits *kestrel.Battery when the reading changes by more
// than noise (any capacity or status change, 50 mV, 1 °C) and as a
// heartbeat.
package battery
