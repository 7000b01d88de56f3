// Package ota is the end-to-end test of over-the-air updates
// (docs/ota.md): the real kestrel binary under a restart-always
// supervisor (as systemd runs it), a real broker holding a signed release
// manifest and its chunks retained, and a second real build as the
// release. It checks the switch, the health gate, the revert of a broken
// release, the refusal of forged, expired and downgrade manifests, the
// resumption of a download across a kill, an armv7 update under
// qemu-arm, and a crash at every durable step of an update.
package ota
