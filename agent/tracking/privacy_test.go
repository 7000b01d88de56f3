package tracking

import (
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

func radioRec(tac uint32, cell uint64, identity string) kestrel.Record {
	return kestrel.Record{Body: &kestrel.RadioStatus{Profile: kestrel.ProfileLTE, Registered: kestrel.RegHome, TAC: tac, CellID: cell,
		Identity: identity, Operator: "EE", RSSI: -71}}
}

func causes(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

// TestRadioFieldsWithheld: pause and coarse both blank the cell and area
// code, on a copy; off and an own emergency leave them.
func TestRadioFieldsWithheld(t *testing.T) {
	d := config.Defaults()
	for _, mode := range []string{PrivacyPause, PrivacyCoarse, PrivacyOff} {
		pr := d.Privacy
		pr.Mode = mode
		p := New(d.Tracking, pr)
		r := radioRec(0xC3, 0x0A1B2C3D, "")
		orig := r.Body.(*kestrel.RadioStatus)
		if !p.Filter(&r) {
			t.Fatalf("%s: radio status dropped", mode)
		}
		got := r.Body.(*kestrel.RadioStatus)
		if withheld := got.TAC == 0 && got.CellID == 0; withheld != (mode != PrivacyOff) {
			t.Errorf("%s: TAC %d cell %d", mode, got.TAC, got.CellID)
		}
		if orig.TAC != 0xC3 || orig.CellID != 0x0A1B2C3D {
			t.Errorf("%s: the driver's record was changed", mode)
		}
		if got.Operator != "EE" || got.RSSI != -71 {
			t.Errorf("%s: fields that do not locate were changed: %+v", mode, got)
		}
	}
	pr := d.Privacy
	pr.Mode = PrivacyPause
	p := New(d.Tracking, pr)
	e := ev(0, kestrel.EventEmergency)
	p.Filter(&e)
	r := radioRec(0xC3, 0x0A1B2C3D, "")
	if p.Filter(&r); r.Body.(*kestrel.RadioStatus).CellID == 0 {
		t.Error("cell withheld during an own emergency's window")
	}
}

// TestOwnEmergencyOnly: a radio emergency lifts privacy only when it names
// this device's ISSI, configured or learned from +CNUMF.
func TestOwnEmergencyOnly(t *testing.T) {
	d := config.Defaults()
	pr := d.Privacy
	pr.Mode = PrivacyPause
	radioEmergency := func(from string) kestrel.Record {
		return kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "radio", Name: from, Text: "emergency status 0 from " + from}}
	}
	for _, c := range []struct {
		name, cfg, learned, from string
		lifts                    bool
	}{
		{"another radio", "", "2342600012345", "2342600054321", false},
		{"nobody named (+CTXD)", "", "2342600012345", "", false},
		{"own identity unknown", "", "", "2342600054321", false},
		{"own, learned", "", "2342600012345", "2342600012345", true},
		{"own ISSI against learned ITSI", "", "2342600012345", "12345", true},
		{"own, configured", "12345", "", "2342600012345", true},
		{"configured beats learned", "12345", "2342600054321", "2342600054321", false},
	} {
		p := New(d.Tracking, pr)
		p.SetOwnIdentity(c.cfg)
		r := radioRec(1, 1, c.learned)
		p.Filter(&r)
		e := radioEmergency(c.from)
		p.Filter(&e)
		if p.Lifted() != c.lifts {
			t.Errorf("%s: lifted %v, want %v", c.name, p.Lifted(), c.lifts)
		}
		x := mkPos(1000, 51.5, -0.12, 5, 90)
		if p.Filter(&x) != c.lifts {
			t.Errorf("%s: the next fix reported %v, want %v", c.name, !c.lifts, c.lifts)
		}
	}
	for a, b := range map[string]string{"": "", "12a": "12a", "2342600012345": "2342700012345"} {
		if SameRadio(a, b) {
			t.Errorf("SameRadio(%q, %q)", a, b)
		}
	}
}

// TestStrictestWins: the command, the triggers and a zone combine to the
// strictest; each change is one audit entry, naming no place; an own
// emergency lifts all of it and its end is audited.
func TestStrictestWins(t *testing.T) {
	d := config.Defaults()
	now := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC) // a Monday
	pr := d.Privacy
	pr.OnMode, pr.Grid = PrivacyCoarse, 1000
	pr.Docked, pr.GPIOLine = true, "private"
	pr.Schedule = []string{"Mon 18:00-19:00"}
	pr.Zones = []config.PrivacyZone{{Name: "home", Action: "drop", Polygon: [][]float64{{51.50, -0.13}, {51.50, -0.11}, {51.52, -0.11}, {51.52, -0.13}}}}
	tr := d.Tracking
	tr.EmergencyWindow = config.D(time.Minute)
	p := New(tr, pr)
	p.SetClock(func() time.Time { return now })
	step := func(r kestrel.Record, want string) {
		t.Helper()
		p.Filter(&r)
		if m := p.PrivacyMode(); m != want {
			t.Fatalf("mode %s, want %s", m, want)
		}
	}
	outside := func() kestrel.Record { return mkPos(now.UnixMilli(), 51.60, -0.12, 5, 90) }
	inside := func() kestrel.Record { return mkPos(now.UnixMilli(), 51.51, -0.12, 5, 90) }
	docked := kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventDocked, Source: "firmware"}}
	undocked := kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventUndocked, Source: "firmware"}}
	line := func(v int64) kestrel.Record {
		return kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventInput, Source: "gpio", Name: "private", Value: v}}
	}
	step(outside(), PrivacyOff)
	step(docked, PrivacyCoarse)
	step(line(1), PrivacyCoarse) // no change: already coarse
	step(undocked, PrivacyCoarse)
	step(line(0), PrivacyOff)
	step(inside(), PrivacyPause)
	now = now.Add(90 * time.Minute) // 18:30: the schedule holds too
	step(inside(), PrivacyPause)
	step(outside(), PrivacyCoarse)
	if p.SetPrivacy(false) != PrivacyCoarse {
		t.Fatal("a privacy off command overrode the schedule")
	}
	e := ev(now.UnixMilli(), kestrel.EventEmergency)
	p.Filter(&e)
	if !p.Lifted() {
		t.Fatal("own emergency did not lift")
	}
	now = now.Add(2 * time.Minute)
	p.Tick()
	if !p.Lifted() {
		t.Fatal("lift ended before the first fix after the emergency")
	}
	step(outside(), PrivacyCoarse) // reported in full; the lift ends with it
	if p.Lifted() {
		t.Fatal("still lifted after the window and a fix")
	}
	now = now.Add(time.Hour) // 19:32: schedule over
	p.Tick()
	want := []string{
		"privacy coarse (was off): docked",
		"privacy off (was coarse): gpio",
		"privacy pause (was off): zone",
		"privacy coarse (was pause): zone",
		"privacy coarse (was coarse): command",
		"privacy lifted (was coarse): emergency",
		"privacy coarse (was lifted): emergency",
		"privacy off (was coarse): schedule",
	}
	got := causes(p.Flush())
	if len(got) != len(want) {
		t.Fatalf("changes:\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// TestCoarseZone: a coarse zone coarsens, and the schedule's deadline is
// the next edge.
func TestCoarseZone(t *testing.T) {
	d := config.Defaults()
	pr := d.Privacy
	pr.Zones = []config.PrivacyZone{{Name: "hospital", Action: "coarse", Polygon: [][]float64{{51.50, -0.13}, {51.50, -0.11}, {51.52, -0.11}}}}
	pr.Schedule = []string{"Tue 08:00-09:00"}
	now := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	p := New(d.Tracking, pr)
	p.SetClock(func() time.Time { return now })
	r := mkPos(0, 51.505, -0.112, 5, 90)
	if !p.Filter(&r) || pos(r).Coarsened != 1000 {
		t.Fatalf("not coarsened in a coarse zone: %+v", pos(r))
	}
	if d, ok := p.Deadline(); !ok || !d.Equal(time.Date(2026, 12, 8, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("deadline %v %v", d, ok)
	}
}
