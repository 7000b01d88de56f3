package motion_test

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/motion"
)

// sample is one accelerometer reading: ms and m/s² in the sensor's axes.
type sample struct {
	t       int64
	x, y, z float64
}

// recordedDrive loads the real drive (testdata header says where it is from).
func recordedDrive(t *testing.T) []sample {
	t.Helper()
	f, err := os.Open("testdata/drive-corolla-2020-10-15-21.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == 'T' {
			continue
		}
		p := strings.Split(line, ",")
		if len(p) != 4 {
			t.Fatalf("bad line %q", line)
		}
		var v [4]float64
		for i := range p {
			if v[i], err = strconv.ParseFloat(p[i], 64); err != nil {
				t.Fatalf("bad line %q: %v", line, err)
			}
		}
		out = append(out, sample{int64(v[0]), v[1], v[2], v[3]})
	}
	if len(out) < 600 {
		t.Fatalf("only %d samples", len(out))
	}
	return out
}

// withManoeuvre adds a manoeuvre to the recorded drive's samples from
// start for dur: a trapezoid (200 ms ramps) of peak m/s² along the
// vehicle's forward (axis 0) or left (axis 1) axis. The road vibration
// stays the recording's; the manoeuvre's shape is built, not recorded.
func withManoeuvre(in []sample, axis int, peak float64, start, dur int64) []sample {
	out := append([]sample(nil), in...)
	const ramp = 200
	for i := range out {
		dt := out[i].t - start
		if dt < 0 || dt > dur {
			continue
		}
		k := 1.0
		if dt < ramp {
			k = float64(dt) / ramp
		} else if dur-dt < ramp {
			k = float64(dur-dt) / ramp
		}
		if axis == 0 {
			out[i].x += peak * k
		} else {
			out[i].y += peak * k
		}
	}
	return out
}

// fullScale is a LIS3DH at ±16 g: what a crash pulse clips to.
const fullScale = 16 * 9.80665

// withCrash replaces the drive from start with a frontal crash pulse
// sampled at 50 Hz, the agent's default rate under load: a half-sine of
// duration T and velocity change dv (the idealised barrier-test pulse
// shape; docs/radio.md gives the figures used), clipped at full scale,
// then the vehicle at rest.
func withCrash(in []sample, start int64, dv, T float64) []sample {
	var out []sample
	for _, s := range in {
		if s.t < start {
			out = append(out, s)
		}
	}
	peak := math.Pi * dv / (2 * T)
	for ms := int64(0); ms <= 5000; ms += 20 {
		a := 0.0
		if sec := float64(ms) / 1000; sec <= T {
			a = -math.Min(peak*math.Sin(math.Pi*sec/T), fullScale) // deceleration
		}
		out = append(out, sample{start + ms, a, 0, 9.80665})
	}
	return out
}

func detect(t *testing.T, cfg config.Motion, trace []sample, rotate bool) []kestrel.Record {
	t.Helper()
	var got []kestrel.Record
	d := motion.New(cfg, func() (*kestrel.Position, int64) {
		return &kestrel.Position{Lat: -368520000, Lon: 1747900000}, 1_000
	})
	for _, s := range trace {
		x, y := s.x, s.y
		if rotate { // part turned 90° left: sensor +y is forward, -x is left
			x, y = -s.y, s.x
		}
		a := kestrel.Accel{X: int32(math.Round(x * 1000)), Y: int32(math.Round(y * 1000)), Z: int32(math.Round(s.z * 1000))}
		d.Observe(s.t, &a, func(r kestrel.Record) { got = append(got, r) })
	}
	return got
}

func names(recs []kestrel.Record) []string {
	var out []string
	for _, r := range recs {
		e := r.Body.(*kestrel.Event)
		out = append(out, e.Type.String()+"/"+e.Name)
	}
	return out
}

func defaults() config.Motion { return config.Defaults().Motion }

func TestNormalDriveRaisesNothing(t *testing.T) {
	drive := recordedDrive(t)
	if got := detect(t, defaults(), drive, false); len(got) != 0 {
		t.Fatalf("normal drive raised %v", names(got))
	}
	// The same drive with the part mounted turned: the same (nothing).
	cfg := defaults()
	cfg.Mounting = "+y,-x,+z"
	if got := detect(t, cfg, drive, true); len(got) != 0 {
		t.Fatalf("normal drive, rotated mounting, raised %v", names(got))
	}
}

func TestHarshManoeuvres(t *testing.T) {
	drive := recordedDrive(t)
	cases := []struct {
		name      string
		axis      int
		peak      float64
		dur       int64
		want      string
		wantValue float64 // m/s², at least
	}{
		// An emergency stop on a dry road, 0.7 g, for 1.5 s.
		{"brake", 0, -0.7 * 9.80665, 1500, motion.HarshBrake, 5.5},
		// A hard pull-away, 0.5 g, for 2 s (on the recording's downhill, which takes about 1 m/s² off it).
		{"accel", 0, 0.5 * 9.80665, 2000, motion.HarshAccel, 3.5},
		// A fast swerve to the left, 0.55 g, for 1.2 s.
		{"corner", 1, 0.55 * 9.80665, 1200, motion.HarshCorner, 4.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, rotate := range []bool{false, true} {
				cfg := defaults()
				if rotate {
					cfg.Mounting = "+y,-x,+z"
				}
				got := detect(t, cfg, withManoeuvre(drive, c.axis, c.peak, 33_000, c.dur), rotate)
				if len(got) != 1 {
					t.Fatalf("rotate=%v: got %v, want one %s", rotate, names(got), c.want)
				}
				e := got[0].Body.(*kestrel.Event)
				if e.Type != kestrel.EventHarshDriving || e.Name != c.want || float64(e.Value)/1000 < c.wantValue {
					t.Fatalf("rotate=%v: got %+v", rotate, e)
				}
				if got[0].Time < 33_000+300 {
					t.Fatalf("fired at %d ms, before the %v minimum duration", got[0].Time, cfg.HarshDuration)
				}
			}
		})
	}
	// A bump shorter than harsh_duration is not an event.
	if got := detect(t, defaults(), withManoeuvre(drive, 0, -6, 33_000, 250), false); len(got) != 0 {
		t.Fatalf("a 250 ms jolt raised %v", names(got))
	}
}

func TestCrashRaisesExactlyOneEmergency(t *testing.T) {
	drive := recordedDrive(t)
	// 50 km/h into a barrier: ΔV 13.9 m/s over 100 ms (peak 22 g, clipped
	// at 16 g), at 30 s into the recorded drive.
	got := detect(t, defaults(), withCrash(drive, 30_000, 13.9, 0.100), false)
	var crashes []kestrel.Record
	for _, r := range got {
		if e := r.Body.(*kestrel.Event); e.Type == kestrel.EventEmergency {
			crashes = append(crashes, r)
		}
	}
	if len(crashes) != 1 {
		t.Fatalf("got %v, want exactly one emergency", names(got))
	}
	r := crashes[0]
	e := r.Body.(*kestrel.Event)
	if e.Name != "crash" || r.Priority != kestrel.PriorityEmergency || e.Value < 24_500 {
		t.Fatalf("crash %+v priority %v", e, r.Priority)
	}
	if !strings.Contains(e.Text, "last fix -36.8520000,174.7900000") {
		t.Fatalf("crash text %q does not carry the last fix", e.Text)
	}
	// A low-speed shunt (ΔV 2 m/s over 150 ms, 2.1 g) is not a crash.
	for _, r := range detect(t, defaults(), withCrash(drive, 30_000, 2, 0.150), false) {
		if r.Body.(*kestrel.Event).Type == kestrel.EventEmergency {
			t.Fatalf("a 2.1 g shunt raised a crash")
		}
	}
}

func TestGravityFollowsSlopeNotManoeuvre(t *testing.T) {
	cfg := defaults()
	d := motion.New(cfg, nil)
	feed := func(from, to int64, x float64) {
		for ms := from; ms < to; ms += 20 {
			a := kestrel.Accel{X: int32(x * 1000), Z: 9807}
			d.Observe(ms, &a, func(r kestrel.Record) {})
		}
	}
	feed(0, 2000, 0)
	if g, ok := d.Gravity(); !ok || math.Abs(g[2]-9.807) > 0.01 {
		t.Fatalf("gravity %v %v after calibration", g, ok)
	}
	// Parked on a 12 % slope for a minute: learnt.
	feed(2000, 62_000, 1.2)
	if g, _ := d.Gravity(); math.Abs(g[0]-1.2) > 0.05 {
		t.Fatalf("slope not learnt: gravity %v", g)
	}
	// A 5 m/s² manoeuvre for 3 s: not learnt.
	feed(62_000, 65_000, 6.2)
	if g, _ := d.Gravity(); math.Abs(g[0]-1.2) > 0.05 {
		t.Fatalf("manoeuvre leaked into gravity: %v", g)
	}
}

func TestSetConfigLive(t *testing.T) {
	drive := recordedDrive(t)
	cfg := defaults()
	cfg.HarshAccel, cfg.HarshDuration = 1.0, config.D(100*time.Millisecond)
	// The recorded pull-away (about 2 m/s² at 12 s) is over a 1 m/s² threshold.
	if got := detect(t, cfg, drive, false); len(got) == 0 {
		t.Fatal("a 1 m/s² threshold did not see the recorded pull-away")
	}
}
