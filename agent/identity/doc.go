// Package identity owns the device's own signing key: an Ed25519 key made
// at first boot and kept in a 0600 file (device.key_file), never sent or
// logged. Its public half is announced in the birth and state message
// (field "device_key"), so that the platform can pin it at enrolment and
// flag a change; the private half signs what the device vouches for:
// command replies, config reports and evidence checkpoints.
//
// The key is RFC 8032 Ed25519, stored as PEM PKCS#8 (RFC 8410), the form
// openssl and Go's x509 both read. Its id is the first 8 bytes of the
// SHA-256 of the raw public key, in hex, as for fleet signing keys.
package identity
