// Package iio reads a Linux Industrial I/O accelerometer through sysfs.
//
// Standard: the kernel ABI, Documentation/ABI/testing/sysfs-bus-iio:
// in_accel_{x,y,z}_raw, in_accel_scale or in_accel_{x,y,z}_scale (m/s² per
// count), optional in_accel_{x,y,z}_offset (counts, added before scaling),
// and sampling_frequency. Typical parts: ST LIS3DH / LIS2DH12
// (st_accel driver), Bosch BMA2xx (bmc150-accel), NXP MMA8452 (mma8452).
//
// It polls the raw values at the configured rate (the buffered interface
// with triggers is out of scope: it needs a per-part trigger set-up) and
// emits *kestrel.Accel records in mm/s². With a crash threshold set, a
// sample whose magnitude exceeds it also emits an emergency event.
package iio
