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
// Edge timestamps come from the kernel. They are CLOCK_MONOTONIC unless
// GPIO_V2_LINE_FLAG_EVENT_CLOCK_REALTIME is requested (Linux 5.11+); the
// driver requests it, and on an older kernel that refuses the flag it
// converts monotonic stamps to UTC itself.
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
