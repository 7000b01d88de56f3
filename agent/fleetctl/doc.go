// Package fleetctl is the device side of fleet management: the controller
// that receives the fleet's signed configs and commands (the protocol
// itself is transport/fleet) and acts on them.
//
// It owns:
//   - the overlay store: each remote scope (all, group/NAME, device/ID)
//     stored and versioned separately, laid in that order over the local
//     config (file plus --set), with the provenance of every key;
//   - verification: signatures by keys with the right role, targets,
//     bounded version steps, replay, and the redundant anti-rollback
//     anchors (high-waters and the trusted-key set);
//   - the rollback watchdog: a change on probation must reach the broker
//     and prove the parts it touched healthy, or the last good config is
//     restored;
//   - the audit log (bounded, with a junk summary) and the command
//     handlers' dispatch, freshness and replay checks.
//
// The running config belongs to the agent: the controller changes it only
// through a Door (Agent.Reload, the one door) and reads it through
// Door.Config. It talks to the broker through a Messenger. It imports
// nothing of the agent: the config path runs one way, transport →
// controller → agent → units (TestConfigPathOneWay in cmd/kestrelctl).
// See docs/config.md.
package fleetctl
