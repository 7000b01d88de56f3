package platform

import (
	"math"
	"unicode/utf8"
)

// DeviceStatus is what a device's state message says of it for the
// device list: battery, ignition, radio, spool depth and privacy mode.
// Each field is nil when the message does not carry it (a Last Will
// carries none), and the devices row then keeps the last reported value.
// The agent's keys are in docs/topics.md.
type DeviceStatus struct {
	BatteryPercent  *int64  `json:"battery_percent,omitempty"`  // 0-100
	BatteryStatus   *string `json:"battery_status,omitempty"`   // power_supply status: Charging, Discharging, Full, Not charging, Unknown
	Ignition        *bool   `json:"ignition,omitempty"`         // when the vehicle's ignition is wired
	RadioProfile    *string `json:"radio_profile,omitempty"`    // lte, tetra
	RadioRegistered *int64  `json:"radio_registered,omitempty"` // 3GPP TS 27.007 / EN 300 392-5 <stat>
	RadioAct        *int64  `json:"radio_act,omitempty"`        // 27.007 <AcT> (7 E-UTRAN, 11 NR...)
	RadioRSSI       *int64  `json:"radio_rssi,omitempty"`       // dBm; 0 unknown
	SpoolRecords    *int64  `json:"spool_records,omitempty"`    // records not yet acknowledged by the broker
	SpoolBytes      *int64  `json:"spool_bytes,omitempty"`
	SpoolOldestS    *int64  `json:"spool_oldest_s,omitempty"` // age of the oldest, seconds
	PrivacyMode     *string `json:"privacy_mode,omitempty"`   // off, pause, coarse
}

// statusColumns are the devices columns of DeviceStatus, in its field order.
var statusColumns = []string{"battery_percent", "battery_status", "ignition", "radio_profile", "radio_registered",
	"radio_act", "radio_rssi", "spool_records", "spool_bytes", "spool_oldest_s", "privacy_mode"}

// maxStatusText bounds a text column of DeviceStatus; the whole message
// stays in the state column.
const maxStatusText = 64

// statusOf reads the state message's fields; a field of the wrong type is
// left out, a number out of its range is clamped, text is cut to
// maxStatusText.
func statusOf(st map[string]any) DeviceStatus {
	num := func(k string, lo, hi int64) *int64 {
		var n int64
		switch x := st[k].(type) {
		case int64:
			n = x
		case uint64:
			n = int64(min(x, math.MaxInt64))
		case float64:
			if math.IsNaN(x) {
				return nil
			}
			n = int64(max(min(x, float64(hi)), float64(lo)))
		default:
			return nil
		}
		n = max(min(n, hi), lo)
		return &n
	}
	text := func(k string) *string {
		s, ok := st[k].(string)
		if !ok {
			return nil
		}
		if len(s) > maxStatusText {
			s = s[:maxStatusText]
			for !utf8.ValidString(s) {
				s = s[:len(s)-1]
			}
		}
		return &s
	}
	var d DeviceStatus
	d.BatteryPercent = num("battery", 0, 100)
	d.BatteryStatus = text("battery_status")
	if b, ok := st["ignition"].(bool); ok {
		d.Ignition = &b
	}
	d.RadioProfile = text("radio_profile")
	d.RadioRegistered = num("radio_registered", 0, 255)
	d.RadioAct = num("radio_act", 0, 255)
	d.RadioRSSI = num("radio_rssi", math.MinInt16, math.MaxInt16)
	d.SpoolRecords = num("spool_records", 0, math.MaxInt64)
	d.SpoolBytes = num("spool_bytes", 0, math.MaxInt64)
	d.SpoolOldestS = num("spool_oldest_s", 0, math.MaxInt64)
	d.PrivacyMode = text("privacy_mode")
	return d
}

// args are the column values in statusColumns order (NULL when absent).
func (d *DeviceStatus) args() []any {
	return []any{ptrArg(d.BatteryPercent), ptrArg(d.BatteryStatus), ptrArg(d.Ignition), ptrArg(d.RadioProfile), ptrArg(d.RadioRegistered),
		ptrArg(d.RadioAct), ptrArg(d.RadioRSSI), ptrArg(d.SpoolRecords), ptrArg(d.SpoolBytes), ptrArg(d.SpoolOldestS), ptrArg(d.PrivacyMode)}
}

func ptrArg[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
