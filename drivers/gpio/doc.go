// Package gpio reads vehicle inputs (ignition, blue lights, siren, doors)
// from GPIO lines through the Linux GPIO character device, uAPI v2.
//
// Standard: the kernel's include/uapi/linux/gpio.h (v2, Linux 5.10 and
// later) and Documentation/userspace-api/gpio/chardev.rst:
// GPIO_V2_GET_LINE_IOCTL on /dev/gpiochipN requests the lines as inputs
// with both edges, GPIO_V2_LINE_GET_VALUES_IOCTL reads their levels, and
// struct gpio_v2_line_event records are read from the returned line fd.
// Plain Go through golang.org/x/sys/unix: no cgo, no libgpiod.
//
// Edge timestamps come from the kernel, on CLOCK_MONOTONIC (the default;
// GPIO_V2_LINE_FLAG_EVENT_CLOCK_REALTIME is deliberately not requested).
// Debouncing runs on those stamps, so neither a late wake-up of the driver
// nor GPS or NTP stepping the clock of a gateway that booted without a
// real-time clock can turn a bounce into a change. Each stamp is converted
// to UTC when it is read, by the offset between the two clocks at that
// moment, and works on every kernel with the v2 uAPI (5.10+).
//
// Debouncing is done here, in software, on the kernel's raw edges: a
// change is reported once the line has held its new level for the debounce
// period, stamped with the kernel time of the edge that began it. Each
// change is an *kestrel.Event of type EventInput (Name the line, Value the
// logical level 0 or 1) with high priority; the levels at start are
// reported once with normal priority.
//
// The ioctl boundary is the lineRequester interface, so that tests can run
// against a fake with the kernel's behaviour where the gpio-sim module is
// not available.
package gpio
