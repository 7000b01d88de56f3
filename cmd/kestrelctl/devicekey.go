package main

import (
	"strings"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// deviceKeys are the device keys announced in the devices' retained birth
// and state messages ("device_key"), by device id: what kestrelctl checks
// the signatures of config reports and command replies against.
type deviceKeys map[string]string

// observe keeps the announced key if topic is a device's state topic.
// It reports whether it was one.
func (k deviceKeys) observe(topic string, payload []byte) bool {
	if !strings.HasSuffix(topic, "/"+fleet.ChannelState) {
		return false
	}
	dev := deviceOf(topic)
	if dev == "" || len(payload) == 0 || len(payload) > fleet.MaxDeviceMessage {
		return true
	}
	if m, err := decodeStateMap(payload); err == nil {
		if key, ok := m["device_key"].(string); ok && key != "" {
			k[dev] = key
		}
	}
	return true
}

// verdict checks a device message's signature against its device's
// announced key; topic is where the message arrived
// (kestrel/v1/{fleet}/{device}/{channel}).
func (k deviceKeys) verdict(topic string, sig *fleet.DeviceSignature) (string, error) {
	parts := strings.SplitN(topic, "/", 5)
	if len(parts) < 5 {
		return fleet.VerdictBad, nil
	}
	return fleet.Verdict(sig, k[parts[3]], parts[2], parts[3], parts[4])
}

// trusted reports whether a verdict lets kestrelctl believe the message:
// verified; or, as before device keys, unsigned from a device that
// announces no key, or signed by a device whose state is not known. A bad
// signature, a key other than the announced one, or no signature from a
// device that has a key is never believed.
func trusted(verdict string) bool {
	switch verdict {
	case fleet.VerdictBad, fleet.VerdictKeyChanged, fleet.VerdictMissing:
		return false
	}
	return true
}
