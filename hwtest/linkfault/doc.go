// Package linkfault runs the real agent through link faults and USB
// unplugs on the real-kernel rig (hwtest/kernelrig): 20 % packet loss and
// an outage made with netem on the guest's loopback, between the agent and
// an in-process mochi broker, and a USB serial GPS receiver (dummy_hcd +
// g_serial on the gadget side, cdc-acm's /dev/ttyACM0 on the host side)
// unplugged and replugged by deauthorising it.
//
// Every record the agent spools must reach the broker exactly once as the
// platform counts it, by (device, boot, seq); an emergency raised during
// the outage must arrive before the backlog has drained; and after each
// replug the agent must decode a fix from the receiver within 2 s of the
// device node reappearing. The figures, and what the time compression
// means, are in docs/benchmarks.md ("Link faults and USB unplugs on a real
// kernel").
package linkfault
