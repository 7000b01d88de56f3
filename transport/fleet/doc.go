// Package fleet is the fleet-management protocol that kestrelctl and the
// device share: the topics under kestrel/v1/{fleet}/, the signed config
// envelope (kestrel-config/1) and command (kestrel-cmd/1), Ed25519 signing
// and verification, trusted keys with roles and their encodings, the
// messages a device sends back (Report on config/reported, Reply, and
// AuditEntry), and their decoders with size bounds. It has no state and no
// connection: the device side is agent/fleetctl, the operator side
// cmd/kestrelctl. The wire format is specified in docs/config.md and
// docs/topics.md.
package fleet
