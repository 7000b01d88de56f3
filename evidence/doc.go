// Package evidence owns the hash chain over a device's records and the
// signed checkpoints over it (docs/evidence.md): the canonical encoding a
// record's digest covers, the chain the agent keeps as it stamps records,
// the message a checkpoint's Ed25519 signature covers, the export bundle
// format, and the offline verifier that kestrelctl verify runs.
//
// It is shared by the device (agent) and the platform side (kestrelctl,
// platform), so it imports only the record model and transport/wire.
package evidence
