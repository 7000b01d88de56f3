// Package update is the device's updater (docs/ota.md): two binary slots
// under the state directory, a `current` link switched atomically, and a
// state file that records the release running, the one staged or on
// probation, and the last result.
//
// It owns:
//   - staging: chunks written at their offsets into the inactive slot's
//     partial file, with the chunks held recorded in the state file so a
//     download resumes across disconnects and reboots; the whole file's
//     SHA-256 and size checked before it may run;
//   - the switch: the slot's binary made executable, the state saying
//     "pending verify" written before the link is renamed into place;
//   - boot accounting (Launch, Boot): a start while a release is pending
//     verify counts; a second one (a crash, the watchdog, a power cut
//     before the health gate passed) switches the link back, records why,
//     and runs the old binary;
//   - MarkGood and Revert, which the fleet controller's health gate calls.
//
// The manifest's signature, anti-rollback and platform checks
// (transport/fleet.Release) and the transfer over MQTT belong to the
// fleet controller (agent/fleetctl); this package trusts what it is given
// and checks only what it stores: sizes, offsets and the binary's hash.
package update
