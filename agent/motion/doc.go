// Package motion turns accelerometer samples into driving events: harsh
// acceleration, harsh braking, harsh cornering, and a crash, which is an
// emergency carrying the last fix. It is policy, so it lives in agent/ and
// not in the IIO driver: the driver reports samples, this package decides
// what they mean. It is pure (no I/O, no goroutines) so that it can be
// tested on recorded traces sample by sample.
//
// Frame. Samples are in the sensor's axes, as Linux IIO reports them
// (Documentation/ABI/testing/sysfs-bus-iio: proper acceleration, so a part
// at rest reads +9.8 m/s² on its upward axis). motion.mounting maps them
// onto the vehicle's forward, left and up axes; the mounting is
// configuration, set by the fitter, not auto-calibrated (docs/radio.md).
//
// Gravity. The first second of samples is taken as at rest and averaged
// into a gravity estimate (the part powers up with the vehicle standing,
// at ignition). After that the estimate follows the samples through a
// first-order low-pass of time constant motion.gravity_tau, but only while
// the smoothed linear acceleration stays under 2 m/s², so that a slope or
// a re-seated part is learnt while a manoeuvre is not.
//
// Events. The linear acceleration (sample − gravity) is smoothed over
// 150 ms against road vibration. A harsh event fires once when the
// forward (acceleration), backward (braking) or sideways (cornering)
// component has stayed at or over its threshold for motion.harsh_duration,
// and re-arms when it falls under three quarters of the threshold. A crash
// is one unsmoothed sample whose horizontal magnitude reaches motion.crash;
// one emergency is raised, and none again for motion.crash_holdoff.
package motion
