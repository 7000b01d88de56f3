package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/config/offduty"
	"github.com/kestrel-edge/kestrel/drivers/gpio"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/footprint"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
)

// privacyRig is the real agent with a GPS replaying a recorded car track
// on a pseudo-terminal, a TETRA radio or LTE modem fake on another, the
// firmware event socket, the GPIO driver on its ioctl-boundary fake, and
// a real broker whose every message the platform side decodes.
type privacyRig struct {
	t       *testing.T
	ctx     context.Context
	a       *agent.Agent
	plat    *platform.Platform
	modem   *atmodem.Modem
	chips   *gpio.FakeChips
	sock    string
	offset  atomic.Int64 // the agent's clock runs this far ahead of the wall clock
	mu      sync.Mutex
	spooled int
	stop    func()
}

// privacyLine is the GPIO offset of the "private" switch.
const privacyLine = 4

func startPrivacyRig(t *testing.T, profile kestrel.RadioProfile, mut func(*config.Config)) *privacyRig {
	t.Helper()
	r := &privacyRig{t: t}
	b := broker.StartMochi(t)
	track, err := os.ReadFile("../transport/wire/testdata/tracks/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	// Three times the recorded track at one cycle a second, replayed ten
	// times as fast: about 30 s of fixes.
	track = footprint.Retime(slices.Concat(track, track, track), time.Now(), time.Second)
	sim, err := gpssim.New(gpssim.Config{Log: track, Baud: 9600, Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	if r.modem, err = atmodem.New(profile); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.modem.Close() })
	r.chips = gpio.NewFakeChips(map[string]int{"gpiochip0": 8})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	r.ctx = ctx
	if r.plat, err = platform.Subscribe(ctx, platform.Options{URL: b.URL(), Fleet: "test"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.plat.Close)

	cfg := testConfig(t, b.URL(), sim.Path())
	cfg.Radio.Port, cfg.Radio.Profile = r.modem.Path(), profile.String()
	cfg.Radio.Poll = config.D(300 * time.Millisecond)
	cfg.Radio.Heartbeat = config.D(time.Second)
	dir, err := os.MkdirTemp("", "kpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r.sock = filepath.Join(dir, "ev.sock") // short: a socket path is at most 107 bytes
	cfg.Hooks.Socket = r.sock
	cfg.GPIO.DevRoot = t.TempDir()
	cfg.GPIO.Lines = []config.GPIOLine{{Name: "private", Chip: "gpiochip0", Offset: privacyLine}}
	cfg.Tracking.EmergencyWindow = config.D(time.Minute)
	if mut != nil {
		mut(&cfg)
	}
	r.a, err = agent.New(cfg, agent.Options{
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Version:  "test",
		GPIOFake: r.chips,
		Now:      func() time.Time { return time.Now().Add(time.Duration(r.offset.Load())) },
		OnRecord: func(kestrel.Record) { r.mu.Lock(); r.spooled++; r.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.a.Close() })
	r.stop = runWithGPS(t, ctx, r.a, sim)
	return r
}

// delivered waits until every record the agent spooled has reached the
// platform through the broker, and returns them in sequence order.
func (r *privacyRig) delivered() []kestrel.Record {
	r.t.Helper()
	r.mu.Lock()
	n := r.spooled
	r.mu.Unlock()
	if err := r.plat.WaitFor(r.ctx, func(p *platform.Platform) bool { return len(p.Unique()) >= n }); err != nil {
		r.t.Fatalf("%d of %d spooled records reached the platform: %v", len(r.plat.Unique()), n, err)
	}
	var out []kestrel.Record
	for _, a := range r.plat.Unique() {
		out = append(out, a.Record)
	}
	slices.SortFunc(out, func(a, b kestrel.Record) int { return int(a.Seq) - int(b.Seq) })
	return out
}

// waitRecord waits for a record at the platform that match accepts, and
// returns the lowest sequence number of those that do (live data is sent
// newest first, so arrival order is not sequence order).
func (r *privacyRig) waitRecord(what string, match func(kestrel.Record) bool) uint64 {
	r.t.Helper()
	return r.waitRecordAfter(what, 0, match)
}

func (r *privacyRig) waitRecordAfter(what string, after uint64, match func(kestrel.Record) bool) uint64 {
	r.t.Helper()
	var seq uint64
	err := r.plat.WaitFor(r.ctx, func(p *platform.Platform) bool {
		seq = 0
		for _, a := range p.Unique() {
			if a.Record.Seq > after && match(a.Record) && (seq == 0 || a.Record.Seq < seq) {
				seq = a.Record.Seq
			}
		}
		return seq != 0
	})
	if err != nil {
		r.t.Fatalf("no %s reached the platform: %v", what, err)
	}
	return seq
}

// waitPrivacy waits for the first privacy event after seq after of cause
// whose Value is mode (0 off, 1 coarse, 2 pause, 3 lifted).
func (r *privacyRig) waitPrivacy(cause string, mode int64, after uint64) uint64 {
	r.t.Helper()
	return r.waitRecordAfter(fmt.Sprintf("privacy event %s=%d", cause, mode), after, func(rec kestrel.Record) bool {
		ev, ok := rec.Body.(*kestrel.Event)
		return ok && ev.Type == kestrel.EventPrivacy && ev.Name == cause && ev.Value == mode
	})
}

// waitDropped waits until the policy has dropped n more positions.
func (r *privacyRig) waitDropped(n uint64) {
	r.t.Helper()
	want := r.a.Stats().Filtered.Load() + n
	for r.a.Stats().Filtered.Load() < want {
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("the policy dropped %d of %d more positions", r.a.Stats().Filtered.Load()+n-want, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitPositions waits until n positions with a sequence number above
// after have reached the platform.
func (r *privacyRig) waitPositions(n int, after uint64) {
	r.t.Helper()
	err := r.plat.WaitFor(r.ctx, func(p *platform.Platform) bool {
		k := 0
		for _, a := range p.Unique() {
			if a.Record.Kind() == kestrel.KindPosition && a.Record.Seq > after {
				k++
			}
		}
		return k >= n
	})
	if err != nil {
		r.t.Fatalf("fewer than %d positions after seq %d: %v", n, after, err)
	}
}

// coordinates is a latitude and longitude written out in text, as the
// crash emergency's "last fix 45.2735189,13.7142100" is.
var coordinates = regexp.MustCompile(`-?\d{1,3}\.\d{3,}\s*,\s*-?\d{1,3}\.\d{3,}`)

// locates says what in a record would locate the device, or "" for
// nothing. Every record kind is named: a new kind fails here until someone
// decides whether it locates.
func locates(rec kestrel.Record) string {
	switch b := rec.Body.(type) {
	case *kestrel.Position:
		return fmt.Sprintf("position %d,%d", b.Lat, b.Lon)
	case *kestrel.RadioStatus:
		// Operator (the network, MCC and MNC: a country) and signal
		// levels do not locate; the cell and the area code do.
		if b.TAC != 0 || b.CellID != 0 {
			return fmt.Sprintf("radio status with area code %d and cell %d", b.TAC, b.CellID)
		}
	case *kestrel.Event:
		if coordinates.MatchString(b.Text) || coordinates.MatchString(b.Name) {
			return fmt.Sprintf("%s event with a position: %q", b.Type, b.Text)
		}
	case *kestrel.GPSStatus, *kestrel.Accel, *kestrel.Battery, *kestrel.Thermal, *kestrel.LinkUsage, *kestrel.ExecAudit, *kestrel.Checkpoint:
		// Receiver health, sensor readings, link counters, programs run,
		// evidence checkpoints (sequence numbers, a digest, a signature).
	default:
		return fmt.Sprintf("record kind %v: does it locate? decide in this test", rec.Kind())
	}
	return ""
}

// checkPrivate fails for every record with a sequence number in (from, to)
// that locates the device.
func checkPrivate(t *testing.T, recs []kestrel.Record, from, to uint64) (checked int) {
	t.Helper()
	for _, rec := range recs {
		if rec.Seq <= from || rec.Seq >= to {
			continue
		}
		checked++
		if what := locates(rec); what != "" {
			t.Errorf("seq %d: %s left the device while private", rec.Seq, what)
		}
	}
	return checked
}

func kinds(recs []kestrel.Record) map[kestrel.Kind]int {
	m := map[kestrel.Kind]int{}
	for _, r := range recs {
		m[r.Kind()]++
	}
	return m
}

// TestPauseSendsNothingThatLocates: with privacy.mode "pause" the modem
// reports a tracking area and cell in every status and the GPS a fix
// every cycle; of everything that reaches the broker, no record of any
// kind carries a position, a cell identity or an area code.
func TestPauseSendsNothingThatLocates(t *testing.T) {
	for _, profile := range []kestrel.RadioProfile{kestrel.ProfileLTE, kestrel.ProfileTETRA} {
		t.Run(profile.String(), func(t *testing.T) {
			r := startPrivacyRig(t, profile, func(c *config.Config) { c.Privacy.Mode = "pause" })
			r.waitRecord("radio status", func(rec kestrel.Record) bool { return rec.Kind() == kestrel.KindRadio })
			r.waitRecord("GPS status", func(rec kestrel.Record) bool { return rec.Kind() == kestrel.KindGPSStatus })
			r.waitDropped(30)
			// A change of cell while paused, and another radio's emergency
			// (TETRA), must not leak either.
			r.modem.Set(func(s *atmodem.State) { s.TAC, s.CI, s.LA = "00C4", "0A1B2C3E", "1002" })
			r.modem.RegistrationURC()
			if profile == kestrel.ProfileTETRA {
				r.modem.URC("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "0000")
				r.waitRecord("the other radio's emergency", func(rec kestrel.Record) bool {
					ev, ok := rec.Body.(*kestrel.Event)
					return ok && ev.Type == kestrel.EventEmergency
				})
			}
			r.waitDropped(30)
			recs := r.delivered()
			n := checkPrivate(t, recs, 0, ^uint64(0))
			k := kinds(recs)
			if k[kestrel.KindRadio] < 2 || k[kestrel.KindGPSStatus] < 1 {
				t.Fatalf("too little to judge: %v", k)
			}
			t.Logf("%d records checked (%v), %d positions dropped", n, k, r.a.Stats().Filtered.Load())
			r.stop()
		})
	}
}

// TestOnlyOwnEmergencyLiftsPrivacy: a TETRA emergency status from another
// radio's ISSI is reported but lifts nothing; the camera's own emergency
// button does, for tracking.emergency_window, and the lift and its end
// are audited.
func TestOnlyOwnEmergencyLiftsPrivacy(t *testing.T) {
	r := startPrivacyRig(t, kestrel.ProfileTETRA, func(c *config.Config) {
		c.Privacy.Mode = "pause"
		c.Tracking.EmergencyWindow = config.D(3 * time.Second)
	})
	// The radio has said who it is (+CNUMF).
	r.waitRecord("the radio's own identity", func(rec kestrel.Record) bool {
		rs, ok := rec.Body.(*kestrel.RadioStatus)
		return ok && rs.Identity == "2342600012345"
	})
	r.waitDropped(10)
	// Emergency status 0 from 2342600054321: a colleague in trouble.
	r.modem.URC("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "0000")
	other := r.waitRecord("the other radio's emergency", func(rec kestrel.Record) bool {
		ev, ok := rec.Body.(*kestrel.Event)
		return ok && ev.Type == kestrel.EventEmergency && ev.Name == "2342600054321"
	})
	r.waitDropped(40)
	recs := r.delivered()
	if n := checkPrivate(t, recs, other, ^uint64(0)); n == 0 {
		t.Fatal("nothing after the other radio's emergency to check")
	}
	for _, rec := range recs {
		if ev, ok := rec.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventPrivacy {
			t.Errorf("privacy changed on another radio's emergency: %s", ev.Text)
		}
	}
	if r.a.Policy().Lifted() {
		t.Fatal("the policy says lifted after another radio's emergency")
	}
	// The officer's own button lifts it.
	if _, err := eventsock.Send(r.sock, "emergency", map[string]string{"name": "button"}); err != nil {
		t.Fatal(err)
	}
	lift := r.waitPrivacy("emergency", 3, other)
	r.waitPositions(5, lift)
	end := r.waitPrivacy("emergency", 2, lift) // back to pause when the window ends
	r.waitDropped(10)
	recs = r.delivered()
	checkPrivate(t, recs, end, ^uint64(0))
	r.stop()
}

// runTrigger checks one off-duty trigger through the real agent: on puts
// privacy on (cause, pause), off takes it off again; positions flow
// before, none and no cell leaves between, and they flow again after.
func runTrigger(t *testing.T, r *privacyRig, cause string, on, off func()) {
	t.Helper()
	r.waitPositions(5, 0)
	on()
	start := r.waitPrivacy(cause, 2, 0)
	r.waitDropped(20)
	off()
	end := r.waitPrivacy(cause, 0, start)
	r.waitPositions(5, end)
	recs := r.delivered()
	if n := checkPrivate(t, recs, start, end); n == 0 {
		t.Fatal("nothing sent while private to check")
	}
	t.Logf("%s: privacy from seq %d to %d, %d positions dropped", cause, start, end, r.a.Stats().Filtered.Load())
	r.stop()
}

// TestDockedTurnsPrivacyOn: the firmware's docked event turns privacy on,
// undocked turns it off (privacy.docked).
func TestDockedTurnsPrivacyOn(t *testing.T) {
	r := startPrivacyRig(t, kestrel.ProfileLTE, func(c *config.Config) { c.Privacy.Docked = true })
	send := func(typ string) func() {
		return func() {
			if _, err := eventsock.Send(r.sock, typ, map[string]string{"name": "cradle"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	runTrigger(t, r, "docked", send("docked"), send("undocked"))
}

// TestPrivacySwitchTurnsPrivacyOn: a private-use switch on a GPIO line
// (privacy.gpio_line).
func TestPrivacySwitchTurnsPrivacyOn(t *testing.T) {
	r := startPrivacyRig(t, kestrel.ProfileLTE, func(c *config.Config) { c.Privacy.GPIOLine = "private" })
	runTrigger(t, r, "gpio",
		func() { r.chips.Set("gpiochip0", privacyLine, true) },
		func() { r.chips.Set("gpiochip0", privacyLine, false) })
}

// TestScheduleTurnsPrivacyOn: the weekly schedule, on the agent's clock
// (injected, so the test need not wait for Wednesday night).
func TestScheduleTurnsPrivacyOn(t *testing.T) {
	// Start one minute before Wednesday 03:00 in Europe/London.
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	now := time.Now().In(london)
	wed := time.Date(now.Year(), now.Month(), now.Day()+(int(time.Wednesday)-int(now.Weekday())+7)%7+7, 3, 0, 0, 0, london)
	var r *privacyRig
	r = startPrivacyRig(t, kestrel.ProfileLTE, func(c *config.Config) {
		c.Privacy.Schedule, c.Privacy.TimeZone = []string{"Wed 03:00-04:00"}, "Europe/London"
	})
	setClock := func(at time.Time) func() {
		return func() { r.offset.Store(int64(time.Until(at))) }
	}
	setClock(wed.Add(-time.Minute))()
	runTrigger(t, r, "schedule", setClock(wed.Add(time.Second)), setClock(wed.Add(time.Hour+time.Second)))
}

// TestZoneDropsPositions: a privacy zone drawn round part of the recorded
// drive: no position inside it reaches the platform, positions before and
// after do, and the audit names no zone.
func TestZoneDropsPositions(t *testing.T) {
	fixes := readFixes(t, "../transport/wire/testdata/tracks/visnjan-car.fixes.jsonl")
	times := make([]int64, 0, len(fixes))
	for tm := range fixes {
		times = append(times, tm)
	}
	slices.Sort(times)
	// The box round fixes 40 to 60, with a few metres to spare.
	lat0, lat1, lon0, lon1 := 90.0, -90.0, 180.0, -180.0
	for _, tm := range times[40:60] {
		p := fixes[tm]
		lat, lon := float64(p.Lat)/1e7, float64(p.Lon)/1e7
		lat0, lat1, lon0, lon1 = min(lat0, lat), max(lat1, lat), min(lon0, lon), max(lon1, lon)
	}
	const m = 5e-5
	poly := [][]float64{{lat0 - m, lon0 - m}, {lat0 - m, lon1 + m}, {lat1 + m, lon1 + m}, {lat1 + m, lon0 - m}}
	zone, err := offduty.NewZone("surgery", "drop", poly)
	if err != nil {
		t.Fatal(err)
	}
	r := startPrivacyRig(t, kestrel.ProfileLTE, func(c *config.Config) {
		c.Privacy.Zones = []config.PrivacyZone{{Name: "surgery", Action: "drop", Polygon: poly}}
	})
	start := r.waitPrivacy("zone", 2, 0)
	end := r.waitPrivacy("zone", 0, start)
	r.waitPositions(5, end)
	recs := r.delivered()
	checkPrivate(t, recs, start, end)
	before := 0
	for _, rec := range recs {
		switch b := rec.Body.(type) {
		case *kestrel.Position:
			if zone.Contains(b.Lat, b.Lon) {
				t.Errorf("seq %d: a position inside the zone reached the platform", rec.Seq)
			}
			if rec.Seq < start {
				before++
			}
		case *kestrel.Event:
			if strings.Contains(b.Text+b.Name, "surgery") {
				t.Errorf("seq %d: the zone's name left the device: %q", rec.Seq, b.Text)
			}
		}
	}
	if before == 0 {
		t.Fatal("no position before the zone")
	}
	r.stop()
}
