package fleet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Device messages (config reports and command replies) are signed with the
// device's own Ed25519 key (agent/identity), whose public half the device
// announces as "device_key" in its retained birth and state message. The
// signed form wraps the message's JSON unchanged:
//
//	{"kestrel":"kestrel-device/1","kid":"…","body":{…the report…},"sig":"…"}
//
// The signature covers the format, fleet, device and channel (the topic
// below kestrel/v1/{fleet}/{device}/) and the body's exact bytes, so a
// report cannot be passed off as another device's, nor a reply as a
// report. A message without the wrapper is unsigned (a device from before
// signing).
const deviceFormat = "kestrel-device/1"

// MaxDeviceMessage bounds a report or reply before it is parsed: a report
// lists the effective config key by key, a few KiB; replies are smaller.
const MaxDeviceMessage = 256 << 10

// ErrDeviceKeyChanged marks a device message signed by a key other than
// the one the device announces.
var ErrDeviceKeyChanged = errors.New("signed by a key other than the device announces")

// sealed is the signed form of a device message.
type sealed struct {
	Format string          `json:"kestrel"`
	KeyID  string          `json:"kid"`
	Body   json.RawMessage `json:"body"`
	Sig    []byte          `json:"sig"`
}

func deviceSigned(fleetID, device, channel string, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(deviceFormat) + len(fleetID) + len(device) + len(channel) + 4 + len(body))
	b.WriteString(deviceFormat + "\n" + fleetID + "\n" + device + "\n" + channel + "\n")
	b.Write(body)
	return b.Bytes()
}

// DeviceSigner is the device's key: agent/identity's Identity.
type DeviceSigner interface {
	ID() string // KeyID of the public key
	Sign(msg []byte) []byte
}

// Seal signs a device message's JSON body for the channel it is published
// on (relative to the device's topic prefix) and returns the payload. The
// body goes in byte for byte, so the verifier checks the very bytes it
// reads.
func Seal(s DeviceSigner, fleetID, device, channel string, body []byte) ([]byte, error) {
	if !json.Valid(body) {
		return nil, fmt.Errorf("seal %s: body is not JSON", channel)
	}
	kid, _ := json.Marshal(s.ID())
	sig := s.Sign(deviceSigned(fleetID, device, channel, body))
	var b bytes.Buffer
	b.Grow(len(body) + 160)
	b.WriteString(`{"kestrel":"` + deviceFormat + `","kid":`)
	b.Write(kid)
	b.WriteString(`,"body":`)
	b.Write(body)
	b.WriteString(`,"sig":"` + base64.StdEncoding.EncodeToString(sig) + `"}`)
	return b.Bytes(), nil
}

// DeviceSignature is the signature found on a device message.
type DeviceSignature struct {
	KeyID string
	sig   []byte
	body  []byte
}

// Open returns a device message's body and its signature; sig is nil for
// an unsigned message, whose body is the payload itself.
func Open(payload []byte) (body []byte, sig *DeviceSignature, err error) {
	if len(payload) > MaxDeviceMessage {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxDeviceMessage)
	}
	var probe struct {
		Format string `json:"kestrel"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if probe.Format == "" {
		return payload, nil, nil
	}
	if probe.Format != deviceFormat {
		return nil, nil, fmt.Errorf("%w: format %q, want %q", ErrMalformed, probe.Format, deviceFormat)
	}
	var s sealed
	if err := strictJSON(payload, &s); err != nil {
		return nil, nil, err
	}
	if len(s.Sig) != ed25519.SignatureSize || s.KeyID == "" || len(s.KeyID) > 64 || len(s.Body) == 0 {
		return nil, nil, fmt.Errorf("%w: signed device message without a key id, body or %d-byte signature", ErrMalformed, ed25519.SignatureSize)
	}
	return s.Body, &DeviceSignature{KeyID: s.KeyID, sig: s.Sig, body: s.Body}, nil
}

// Verify checks the signature against the device's announced public key
// (the state message's device_key, base64) for the message's fleet,
// device and channel.
func (s *DeviceSignature) Verify(announced, fleetID, device, channel string) error {
	if s == nil {
		return errors.New("unsigned")
	}
	pub, err := base64.StdEncoding.DecodeString(announced)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: announced device key %q is not a base64 Ed25519 public key", ErrMalformed, announced)
	}
	if kid := KeyID(pub); kid != s.KeyID {
		return fmt.Errorf("%w: signed by key id %s, the device announces %s", ErrDeviceKeyChanged, s.KeyID, kid)
	}
	if !ed25519.Verify(pub, deviceSigned(fleetID, device, channel, s.body), s.sig) {
		return fmt.Errorf("%w (device key id %s)", ErrBadSignature, s.KeyID)
	}
	return nil
}

// Verdicts on a device message, as kestrelctl prints them.
const (
	VerdictVerified   = "verified"    // signed by the key the device announces
	VerdictUnsigned   = "unsigned"    // no signature, from a device that announces no key (from before signing)
	VerdictMissing    = "missing"     // no signature, though the device announces a key: stripped or forged
	VerdictNoKey      = "no key"      // signed, but no announced key to check it against
	VerdictKeyChanged = "key changed" // signed by another key than the announced one
	VerdictBad        = "bad signature"
)

// Verdict checks sig (nil: unsigned) against the announced key ("" when
// the device's state message is not known) and says what it found; err
// has the detail for every verdict but verified and unsigned. Only
// verified proves the device sent it; unsigned and no key cannot tell.
func Verdict(sig *DeviceSignature, announced, fleetID, device, channel string) (string, error) {
	switch {
	case sig == nil && announced == "":
		return VerdictUnsigned, nil
	case sig == nil:
		kid := "?"
		if pub, err := base64.StdEncoding.DecodeString(announced); err == nil {
			kid = KeyID(pub)
		}
		return VerdictMissing, fmt.Errorf("unsigned, but the device announces key id %s: the signature was stripped or the message forged", kid)
	case announced == "":
		return VerdictNoKey, fmt.Errorf("signed by device key id %s, but no state message announces the device's key", sig.KeyID)
	}
	err := sig.Verify(announced, fleetID, device, channel)
	switch {
	case err == nil:
		return VerdictVerified, nil
	case errors.Is(err, ErrDeviceKeyChanged):
		return VerdictKeyChanged, err
	}
	return VerdictBad, err
}
