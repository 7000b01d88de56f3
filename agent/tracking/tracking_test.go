package tracking

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
)

// loadTrack reads a real recorded track (testdata/README.md) as records.
func loadTrack(t testing.TB, name string) []kestrel.Record {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []kestrel.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var j struct {
			Time              time.Time
			Lat, Lon          float64
			Alt, Speed, Track *float64
			Mode              uint8
		}
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatal(err)
		}
		p := &kestrel.Position{Lat: int32(math.Round(j.Lat * 1e7)), Lon: int32(math.Round(j.Lon * 1e7)), Mode: kestrel.FixMode(j.Mode)}
		if j.Alt != nil {
			p.Alt, p.Flags = int32(math.Round(*j.Alt*100)), p.Flags|kestrel.HasAlt
		}
		if j.Speed != nil {
			p.Speed, p.Flags = int32(math.Round(*j.Speed*100)), p.Flags|kestrel.HasSpeed
		}
		if j.Track != nil {
			p.Track, p.Flags = uint16(math.Round(*j.Track*100))%36000, p.Flags|kestrel.HasTrack
		}
		out = append(out, kestrel.Record{Envelope: kestrel.Envelope{Time: j.Time.UnixMilli()}, Body: p})
	}
	if len(out) == 0 {
		t.Fatal("empty track")
	}
	return out
}

func pos(r kestrel.Record) *kestrel.Position { return r.Body.(*kestrel.Position) }

func copyRec(r kestrel.Record) kestrel.Record {
	p := *pos(r)
	r.Body = &p
	return r
}

func TestCarTrackTriggers(t *testing.T) {
	track := loadTrack(t, "visnjan-car.fixes.jsonl")
	d := config.Defaults()
	p := New(d.Tracking, d.Privacy)
	var kept []kestrel.Record
	var last *kestrel.Record
	for _, r := range track {
		r = copyRec(r)
		if p.Filter(&r) {
			if pos(r).Coarsened != 0 {
				t.Fatal("coarsened with privacy off")
			}
			if last != nil {
				if dt := time.Duration(r.Time-last.Time) * time.Millisecond; dt < d.Tracking.MinInterval.Duration {
					t.Fatalf("two reports %s apart, under min_interval", dt)
				}
			}
			kept = append(kept, r)
			last = &kept[len(kept)-1]
			continue
		}
		// A dropped fix fired no trigger against the last report.
		lp, cp := pos(*last), pos(r)
		if dist := Distance(lp.Lat, lp.Lon, cp.Lat, cp.Lon); dist >= d.Tracking.Distance {
			t.Fatalf("dropped a fix %.0f m from the last report", dist)
		}
		maxI := d.Tracking.MaxInterval.Duration
		if float64(cp.Speed)/100 < d.Tracking.StopSpeed {
			maxI = d.Tracking.StopInterval.Duration
		}
		if dt := time.Duration(r.Time-last.Time) * time.Millisecond; dt >= maxI {
			t.Fatalf("dropped a fix %s after the last report", dt)
		}
	}
	t.Logf("car: %d of %d fixes reported", len(kept), len(track))
	if len(kept) >= len(track) || len(kept) < 5 {
		t.Fatalf("reported %d of %d fixes: no thinning, or too much", len(kept), len(track))
	}
}

func TestStationaryTrackUsesStopInterval(t *testing.T) {
	track := loadTrack(t, "amsterdam-static.fixes.jsonl")
	d := config.Defaults()
	p := New(d.Tracking, d.Privacy)
	n := 0
	for _, r := range track {
		r = copyRec(r)
		if p.Filter(&r) {
			n++
		}
	}
	span := time.Duration(track[len(track)-1].Time-track[0].Time) * time.Millisecond
	// 20 minutes of a receiver at rest, 1 fix/s: GPS wander must neither
	// trip the heading trigger nor the distance trigger much.
	limit := int(span/d.Tracking.StopInterval.Duration) + 3
	t.Logf("stationary: %d of %d fixes over %s reported (limit %d)", n, len(track), span, limit)
	if n > limit {
		t.Fatalf("reported %d fixes of a stationary receiver, want at most %d", n, limit)
	}
}

func mkPos(ms int64, lat, lon float64, speed float64, track float64) kestrel.Record {
	return kestrel.Record{Envelope: kestrel.Envelope{Time: ms}, Body: &kestrel.Position{
		Lat: int32(lat * 1e7), Lon: int32(lon * 1e7), Speed: int32(speed * 100), Track: uint16(track * 100),
		Alt: 3512, Mode: kestrel.Fix3D, EPH: 300, Flags: kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasAlt | kestrel.HasEPH,
	}}
}

func ev(ms int64, typ kestrel.EventType) kestrel.Record {
	return kestrel.Record{Envelope: kestrel.Envelope{Time: ms, Priority: kestrel.PriorityEmergency}, Body: &kestrel.Event{Type: typ, Source: "firmware", Text: "button"}}
}

func TestTriggers(t *testing.T) {
	tr := config.Defaults().Tracking
	pr := config.Defaults().Privacy
	p := New(tr, pr)
	steps := []struct {
		r    kestrel.Record
		keep bool
		why  string
	}{
		{mkPos(0, 51.5, -0.12, 10, 90), true, "first fix"},
		{mkPos(500, 51.5, -0.11, 10, 90), false, "under min_interval even though far"},
		{mkPos(2000, 51.5, -0.1199, 10, 90), false, "7 m, same course and speed"},
		{mkPos(3000, 51.5, -0.1199, 10, 120), true, "turned 30 degrees"},
		{mkPos(4000, 51.5, -0.1198, 14, 121), true, "speed changed by 4 m/s"},
		{mkPos(5000, 51.5, -0.1190, 14, 121), true, "55 m from the last report"},
		{mkPos(6000, 51.5, -0.1190, 0.2, 300), true, "stopped: speed dropped"},
		{mkPos(7000, 51.5, -0.1190, 0.2, 10), false, "stopped: heading is noise"},
		{mkPos(7000+4*60000, 51.5, -0.1190, 0.2, 10), false, "stopped 4 minutes: under stop_interval"},
		{mkPos(6000+5*60000, 51.5, -0.1190, 0.2, 10), true, "stop_interval reached"},
	}
	for i, s := range steps {
		r := s.r
		if got := p.Filter(&r); got != s.keep {
			t.Fatalf("step %d (%s): keep = %v", i, s.why, got)
		}
	}
	// Moving: max_interval fires with no other trigger.
	p = New(tr, pr)
	a, b := mkPos(0, 51.5, -0.12, 5, 90), mkPos(61000, 51.5, -0.12, 5, 90)
	p.Filter(&a)
	if !p.Filter(&b) {
		t.Fatal("max_interval did not fire")
	}
	// A clock that goes back starts again.
	c := mkPos(1000, 51.5, -0.12, 5, 90)
	if !p.Filter(&c) {
		t.Fatal("fix from before the last report dropped")
	}
}

func TestEventsForceNextFix(t *testing.T) {
	d := config.Defaults()
	p := New(d.Tracking, d.Privacy)
	a := mkPos(0, 51.5, -0.12, 5, 90)
	p.Filter(&a)
	e := ev(100, kestrel.EventRecordingStart)
	if !p.Filter(&e) {
		t.Fatal("event dropped")
	}
	b := mkPos(200, 51.5, -0.12, 5, 90)
	if !p.Filter(&b) {
		t.Fatal("fix after recording_start not forced (min_interval must yield)")
	}
	c := mkPos(300, 51.5, -0.12, 5, 90)
	if p.Filter(&c) {
		t.Fatal("force lasted beyond one fix")
	}
	// Events not listed do not force.
	g := kestrel.Record{Body: &kestrel.Event{Type: kestrel.EventGPSState}}
	p.Filter(&g)
	dd := mkPos(400, 51.5, -0.12, 5, 90)
	if p.Filter(&dd) {
		t.Fatal("gps_state forced a fix")
	}
	// "all" forces on any event; SetConfig takes effect live.
	tr := d.Tracking
	tr.ForceEvents = []string{"all"}
	p.SetConfig(tr, d.Privacy)
	p.Filter(&g)
	e2 := mkPos(500, 51.5, -0.12, 5, 90)
	if !p.Filter(&e2) {
		t.Fatal(`"all" did not force`)
	}
}

func TestPrivacyPauseAndEmergency(t *testing.T) {
	d := config.Defaults()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	p := New(d.Tracking, d.Privacy)
	p.SetClock(func() time.Time { return now })
	if m := p.SetPrivacy(true); m != PrivacyPause {
		t.Fatalf("privacy on gave %q, want pause (privacy.on_mode)", m)
	}
	a := mkPos(0, 51.5, -0.12, 5, 90)
	if p.Filter(&a) {
		t.Fatal("position reported during pause")
	}
	// Events pass untouched, and an emergency brings positions back in full.
	e := ev(1000, kestrel.EventEmergency)
	orig := *e.Body.(*kestrel.Event)
	if !p.Filter(&e) || *e.Body.(*kestrel.Event) != orig {
		t.Fatal("emergency event dropped or changed")
	}
	for i := int64(0); i < 5; i++ {
		now = now.Add(time.Second)
		r := mkPos(2000+i*200, 51.5, -0.12, 5, 90) // every fix, min_interval notwithstanding
		want := *pos(r)
		if !p.Filter(&r) || *pos(r) != want {
			t.Fatalf("fix %d in the emergency window dropped or altered: %+v", i, *pos(r))
		}
	}
	now = now.Add(d.Tracking.EmergencyWindow.Duration)
	b := mkPos(700000, 51.6, -0.12, 5, 90)
	if p.Filter(&b) {
		t.Fatal("pause not back in force after the emergency window")
	}
	if m := p.SetPrivacy(false); m != PrivacyOff {
		t.Fatalf("privacy off gave %q", m)
	}
	c := mkPos(800000, 51.7, -0.12, 5, 90)
	if !p.Filter(&c) {
		t.Fatal("position dropped with privacy off")
	}
	// A window of 0 still gives the next fix in full.
	tr := d.Tracking
	tr.EmergencyWindow = config.D(0)
	p.SetConfig(tr, d.Privacy)
	p.SetPrivacy(true)
	e = ev(900000, kestrel.EventEmergency)
	p.Filter(&e)
	x, y := mkPos(900100, 51.7, -0.12, 5, 90), mkPos(900200, 51.8, -0.12, 5, 90)
	if !p.Filter(&x) || p.Filter(&y) {
		t.Fatal("window 0: want exactly the next fix")
	}
}

func TestCoarse(t *testing.T) {
	d := config.Defaults()
	pr := d.Privacy
	pr.Mode, pr.Grid = PrivacyCoarse, 500
	p := New(d.Tracking, pr)
	r1 := mkPos(0, 51.50101, -0.12002, 5, 90)
	if !p.Filter(&r1) {
		t.Fatal("dropped")
	}
	c := pos(r1)
	if c.Coarsened != 500 || c.Flags&kestrel.HasEPH != 0 || c.EPH != 0 || c.Alt%1000 != 0 {
		t.Fatalf("not marked or reduced: %+v", *c)
	}
	if dist := Distance(int32(51.50101e7), int32(-0.12002e7), c.Lat, c.Lon); dist > 500*0.71+1 {
		t.Fatalf("coarse point %.0f m from the fix, more than half a cell diagonal", dist)
	}
	// Two fixes in one cell give the same point: the grid hides movement
	// inside it.
	a, b := &kestrel.Position{Lat: int32(51.50101e7), Lon: int32(-0.12002e7)}, &kestrel.Position{Lat: int32(51.50102e7), Lon: int32(-0.12004e7)}
	Coarsen(a, 500)
	Coarsen(b, 500)
	if a.Lat != b.Lat || a.Lon != b.Lon {
		t.Fatalf("same cell, different points: %v %v", a, b)
	}
	// Near the pole and the antimeridian the result stays in range.
	for _, q := range []*kestrel.Position{{Lat: 899999999, Lon: 1799999999}, {Lat: -900000000, Lon: -1800000000}} {
		Coarsen(q, 100000)
		if q.Lat > 90e7 || q.Lat < -90e7 || q.Lon > 180e7 || q.Lon < -180e7 {
			t.Fatalf("out of range: %+v", q)
		}
	}
	// Restore of a saved override.
	if err := p.RestoreOverride("bogus"); err == nil {
		t.Fatal("bad override accepted")
	}
	if err := p.RestoreOverride(PrivacyOff); err != nil || p.PrivacyMode() != PrivacyOff {
		t.Fatal("override not restored")
	}
	if p.ClearPrivacy() != PrivacyCoarse {
		t.Fatal("clear did not return to the configured mode")
	}
}

func TestDistance(t *testing.T) {
	// One degree of latitude is about 111.2 km; across the antimeridian
	// the short way round is used.
	if d := Distance(0, 0, 1e7, 0); math.Abs(d-111195) > 10 {
		t.Fatalf("1 degree = %.0f m", d)
	}
	if d := Distance(0, 1799000000, 0, -1799000000); math.Abs(d-22239) > 10 {
		t.Fatalf("across the antimeridian = %.0f m", d)
	}
}

func BenchmarkFilter(b *testing.B) {
	track := loadTrack(b, "visnjan-car.fixes.jsonl")
	d := config.Defaults()
	p := New(d.Tracking, d.Privacy)
	recs := make([]kestrel.Record, len(track))
	for i := range track {
		recs[i] = copyRec(track[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := recs[i%len(recs)]
		r.Time += int64(i/len(recs)) * 3600000
		p.Filter(&r)
	}
}

// TestZeroConfigKeepsEveryFix: with every threshold at zero the policy
// reports every fix (what the agent's end-to-end tests rely on).
func TestZeroConfigKeepsEveryFix(t *testing.T) {
	track := loadTrack(t, "visnjan-car.fixes.jsonl")
	p := New(config.Tracking{}, config.Defaults().Privacy)
	for i, r := range track {
		r = copyRec(r)
		if !p.Filter(&r) {
			t.Fatalf("dropped fix %d", i)
		}
	}
}
