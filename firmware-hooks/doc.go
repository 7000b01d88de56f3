// Package firmwarehooks is the home of the agent's kernel and firmware
// hooks; the code lives in its subpackages:
//
//   - linkstats: bytes, packets and drops per network interface, from eBPF
//     tracepoints where the kernel allows it and /proc/net/dev otherwise.
//   - execaudit: every program executed on the device, from the
//     sched:sched_process_exec tracepoint, checked against an allow-list.
//   - eventsock: the Unix socket on which the camera firmware reports
//     events (recording, emergency button, dock, tamper...).
//
// See docs/hooks.md for operators: privileges, tracefs, the socket protocol.
package firmwarehooks
