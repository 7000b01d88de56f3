package agent_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
	"github.com/tinylib/msgp/msgp"
)

// locationKeys are state message keys that would place a device by its
// radio cell.
var locationKeys = []string{"cell", "ci", "tac", "lac", "la", "area", "ecgi", "nci"}

// TestStateMessageDashboardFields runs the agent with the LTE modem
// simulator and a fake battery: its retained state message carries the
// dashboard's columns (battery and charging, radio registration,
// technology and signal, spool depth, privacy mode). When the fleet
// privacy command pauses tracking, the state message is republished with
// privacy_mode "pause", and neither it nor any earlier one carries the
// modem's cell identity or tracking area code.
func TestStateMessageDashboardFields(t *testing.T) {
	b := broker.StartMochi(t)
	modem, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	defer modem.Close()
	st := modem.State()
	if st.TAC == "" || st.CI == "" {
		t.Fatalf("the modem simulator reports no cell: %+v", st)
	}
	tree, _ := fakesysfs.New(t.TempDir())
	if err := tree.AddBattery("BAT0", fakesysfs.Battery{Capacity: 64, Status: "Charging", VoltageUV: 3900000}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, b.URL(), "")
	cfg.Radio.Port, cfg.Radio.Profile, cfg.Radio.Poll.Duration = modem.Path(), "lte", 300*time.Millisecond
	cfg.Sensors.SysfsRoot, cfg.Sensors.DevRoot = tree.Root, t.TempDir()
	cfg.Sensors.BatteryPeriod.Duration, cfg.Sensors.ThermalPeriod.Duration = 100*time.Millisecond, 0
	obs := b.Observe(wire.Topic(cfg.Device.Fleet, cfg.Device.ID, "state"))

	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// wait waits for the newest state message to satisfy ok.
	var last map[string]any
	var size int
	wait := func(what string, ok func(map[string]any) bool) {
		t.Helper()
		if !obs.Wait(20*time.Second, func(ms []broker.Message) bool {
			for _, m := range slices.Backward(ms) {
				v, err := mqtt.DecodeState(m.Payload)
				if err != nil {
					t.Fatalf("state message: %v", err)
				}
				if ok(v) {
					last, size = v, len(m.Payload)
					return true
				}
				break
			}
			return false
		}) {
			t.Fatalf("no state message with %s; last %v", what, last)
		}
	}
	// The birth message carries privacy_mode from the start.
	wait("privacy_mode off", func(v map[string]any) bool { return v["privacy_mode"] == "off" })
	// The battery and the radio are in the next one (the privacy switch
	// republishes it; the periodic refresh is a minute away), once both
	// have reported.
	for a.StateFields()["radio_registered"] == nil || a.StateFields()["battery"] == nil {
		if ctx.Err() != nil {
			t.Fatalf("no battery or radio status: %v", a.StateFields())
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.PrivacySwitch().SetPrivacy(false)
	wait("battery and radio", func(v map[string]any) bool { return v["radio_registered"] != nil && v["battery"] != nil })
	added, _ := msgp.AppendIntf(nil, map[string]any{"privacy_mode": last["privacy_mode"], "radio_act": last["radio_act"]})
	t.Logf("state message with battery, radio, spool and privacy: %d bytes, of which privacy_mode and radio_act %d", size, len(added)-1)
	long := map[string]any{}
	for k, v := range last {
		if strings.HasPrefix(k, "spool_recovery_") || k == "spool_unreadable_records" || k == "capabilities" {
			long[k] = v
		}
	}
	lb, _ := msgp.AppendIntf(nil, long)
	t.Logf("of which the spool recovery counters and capabilities: %d bytes", len(lb)-1)
	for k, want := range map[string]any{"battery": int64(64), "battery_status": "Charging", "radio_registered": int64(st.Stat),
		"radio_act": int64(st.AcT), "privacy_mode": "off"} {
		if got := asInt64(last[k]); got != asInt64(want) {
			t.Errorf("%s = %v (%T), want %v", k, last[k], last[k], want)
		}
	}
	for _, k := range []string{"radio_rssi", "spool_records", "spool_bytes", "spool_oldest_s"} {
		if _, ok := last[k]; !ok {
			t.Errorf("no %s in %v", k, last)
		}
	}

	if mode := a.PrivacySwitch().SetPrivacy(true); mode != "pause" {
		t.Fatalf("privacy on: %s", mode)
	}
	wait("privacy_mode pause", func(v map[string]any) bool { return v["privacy_mode"] == "pause" })
	t.Logf("state message in pause: %d bytes", size)
	if last["radio_registered"] == nil {
		t.Errorf("the pause state message lost the radio's registration: %v", last)
	}
	for _, m := range obs.Messages() {
		v, _ := mqtt.DecodeState(m.Payload)
		for k, val := range v {
			for _, bad := range locationKeys {
				if strings.Contains(strings.ToLower(k), bad) && !strings.HasPrefix(k, "spool_") {
					t.Errorf("state message key %q = %v: a location-bearing radio field", k, val)
				}
			}
			if s, ok := val.(string); ok && (strings.EqualFold(s, st.CI) || strings.EqualFold(s, st.TAC)) {
				t.Errorf("state message %s = %q: the modem's cell or area", k, s)
			}
			if n, ok := asInt64(val).(int64); ok && (n == hexValue(st.CI) || n == hexValue(st.TAC)) {
				t.Errorf("state message %s = %v: the modem's cell or area", k, val)
			}
		}
	}
}

// asInt64 makes the integers DecodeState returns (int64 or uint64) and
// the test's own comparable.
func asInt64(v any) any {
	switch n := v.(type) {
	case int:
		return int64(n)
	case uint64:
		return int64(n)
	}
	return v
}

func hexValue(s string) int64 {
	n, _ := strconv.ParseInt(s, 16, 64)
	return n
}
