//go:build kestrel_earlyack

package platform

// earlyAck breaks the guarantee for the test of the test: with the
// kestrel_earlyack tag a message is acknowledged as soon as it arrives, as a
// naive subscriber with paho's auto-ack does, so a SIGKILL between the
// PUBACK and the commit loses it. Never build a release with this tag.
const earlyAck = true
