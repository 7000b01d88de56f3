// Package thermal reads Linux thermal zones through sysfs.
//
// Standard: the kernel ABI, Documentation/ABI/testing/sysfs-class-thermal
// and Documentation/driver-api/thermal/sysfs-api.rst:
// /sys/class/thermal/thermal_zoneN/type (e.g. "cpu-thermal") and temp
// (millidegrees Celsius).
//
// It polls every zone and emits one *kestrel.Thermal per zone when its
// temperature moves by the hysteresis (1 °C by default) and as a
// heartbeat.
package thermal
