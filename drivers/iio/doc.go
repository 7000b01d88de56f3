// Package iio reads a Linux Industrial I/O accelerometer.
//
// Standard: the kernel ABI, Documentation/ABI/testing/sysfs-bus-iio, and
// the buffered interface of Documentation/driver-api/iio/buffers.rst.
// Attributes: in_accel_{x,y,z}_raw, in_accel_scale or in_accel_{x,y,z}_scale
// (m/s² per count), optional in_accel_{x,y,z}_offset (counts, added before
// scaling), and sampling_frequency. Typical parts: ST LIS3DH / LIS2DH12
// (st_accel driver), Bosch BMA2xx (bmc150-accel), NXP MMA8452 (mma8452).
//
// Where the device has a buffer (scan_elements/, buffer/, and a character
// device DevRoot/iio:deviceN), the driver enables the three axes and the
// timestamp in scan_elements, attaches the device's own data-ready
// trigger (or the first trigger there is) to trigger/current_trigger, sets
// buffer/length and buffer/watermark (Rate × Batch scans), enables the
// buffer, and reads whole scans: one read, one wakeup, per batch. Scans
// are decoded from each channel's in_*_type ("le:s12/16>>4": endianness,
// sign, real bits, storage bits, shift) and laid out as the kernel does
// (each channel aligned to its storage, in index order, the scan padded to
// the largest); a sample's time is its timestamp channel (CLOCK_REALTIME,
// set through current_timestamp_clock). Without a buffer, or when setting
// it up fails, the driver polls the raw attributes at Rate, holding them
// open and reading each with one pread.
//
// It emits *kestrel.Accel records in mm/s². What the samples mean (harsh
// driving, a crash) is the agent's policy, in agent/motion.
package iio
