package platform

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tinylib/msgp/msgp"

	"github.com/kestrel-edge/kestrel/transport/wire"
)

// statusMsg is a state message as transport/mqtt's birth encodes it, with
// the agent's extra fields.
func statusMsg(t *testing.T, dev string, online bool, at int64, extra map[string]any) Message {
	t.Helper()
	m := map[string]any{"online": online, "boot": uint32(1), "bdseq": uint64(1), "version": "1.2.3", "time": at}
	for k, v := range extra {
		m[k] = v
	}
	b, err := msgp.AppendIntf(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Topic: wire.Topic("f1", dev, ChannelState), Payload: b, Received: time.Now()}
}

func device(t *testing.T, s *Store, dev string) Device {
	t.Helper()
	devs, err := s.Devices(context.Background(), "f1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Device == dev {
			return d
		}
	}
	t.Fatalf("device %s not stored", dev)
	return Device{}
}

func eq[T comparable](p *T, want T) bool { return p != nil && *p == want }

// TestDeviceStatusColumns: the device list's fields of a state message
// land in their columns; a Last Will (which carries none) keeps the last
// reported ones; a later birth replaces them; a field of the wrong type is
// left out and a number out of range clamped.
func TestDeviceStatusColumns(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		now := time.Now().UnixMilli()
		write(t, s, statusMsg(t, "cam-1", true, now, map[string]any{
			"battery": 64, "battery_status": "Charging", "ignition": true, "radio_profile": "lte", "radio_registered": 1,
			"radio_act": 7, "radio_rssi": -71, "spool_records": 12, "spool_bytes": 480, "spool_oldest_s": 3, "privacy_mode": "off"}))
		d := device(t, s, "cam-1")
		if !eq(d.BatteryPercent, 64) || !eq(d.BatteryStatus, "Charging") || !eq(d.Ignition, true) || !eq(d.RadioProfile, "lte") ||
			!eq(d.RadioRegistered, 1) || !eq(d.RadioAct, 7) || !eq(d.RadioRSSI, -71) || !eq(d.SpoolRecords, 12) ||
			!eq(d.SpoolBytes, 480) || !eq(d.SpoolOldestS, 3) || !eq(d.PrivacyMode, "off") {
			t.Fatalf("birth: %+v", d.DeviceStatus)
		}
		write(t, s, statusMsg(t, "cam-1", false, now+1000, nil)) // the Last Will
		d = device(t, s, "cam-1")
		if d.Online == nil || *d.Online || !eq(d.BatteryPercent, 64) || !eq(d.PrivacyMode, "off") || !eq(d.SpoolRecords, 12) {
			t.Fatalf("after the Last Will: online %v %+v", d.Online, d.DeviceStatus)
		}
		write(t, s, statusMsg(t, "cam-1", true, now+2000, map[string]any{"battery": "lots", "radio_registered": 300,
			"spool_records": -5, "privacy_mode": "pause", "battery_status": strings.Repeat("é", 100)}))
		d = device(t, s, "cam-1")
		if !eq(d.BatteryPercent, 64) || !eq(d.RadioRegistered, 255) || !eq(d.SpoolRecords, 0) || !eq(d.PrivacyMode, "pause") ||
			d.BatteryStatus == nil || len(*d.BatteryStatus) > maxStatusText || !strings.HasPrefix(*d.BatteryStatus, "éé") {
			t.Fatalf("bad fields: %+v", d.DeviceStatus)
		}
		// An older message (a retained one delivered late) changes nothing.
		write(t, s, statusMsg(t, "cam-1", true, now-5000, map[string]any{"privacy_mode": "off"}))
		if d = device(t, s, "cam-1"); !eq(d.PrivacyMode, "pause") {
			t.Fatalf("an older state message won: %+v", d.DeviceStatus)
		}
	})
}

// TestDeviceStatusMigration: a devices row written before the columns
// existed gets them from its stored state when the migration runs.
func TestDeviceStatusMigration(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		ctx := context.Background()
		write(t, s, statusMsg(t, "old-1", true, time.Now().UnixMilli(), map[string]any{"battery": 41, "battery_status": "Discharging",
			"ignition": false, "radio_profile": "tetra", "radio_registered": 5, "radio_rssi": -90, "spool_records": 7, "spool_bytes": 700,
			"spool_oldest_s": 60, "privacy_mode": "coarse", "radio_act": 7}))
		// Back to schema 2: the columns go, the row keeps its state.
		for _, c := range statusColumns {
			if _, err := s.DB().ExecContext(ctx, "ALTER TABLE devices DROP COLUMN "+c); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.DB().ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = 3"); err != nil {
			t.Fatal(err)
		}
		if err := s.migrate(ctx); err != nil {
			t.Fatal(err)
		}
		d := device(t, s, "old-1")
		if !eq(d.BatteryPercent, 41) || !eq(d.BatteryStatus, "Discharging") || !eq(d.Ignition, false) || !eq(d.RadioProfile, "tetra") ||
			!eq(d.RadioRegistered, 5) || !eq(d.RadioRSSI, -90) || !eq(d.SpoolRecords, 7) || !eq(d.SpoolBytes, 700) || !eq(d.SpoolOldestS, 60) ||
			!eq(d.PrivacyMode, "coarse") || !eq(d.RadioAct, 7) {
			t.Fatalf("after the migration: %+v", d.DeviceStatus)
		}
	})
}
