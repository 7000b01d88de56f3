package selftest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/selftest"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/hwtest/footprint"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// rig is a set of simulated parts and a config that points at them.
type rig struct {
	cfg   config.Config
	sim   *gpssim.Sim
	modem *atmodem.Modem
	tree  *fakesysfs.Tree
}

// newRig plugs in a GPS replaying a real track (its times moved to now, so
// the clock check compares against a live-looking receiver), an LTE modem,
// a sysfs tree with an accelerometer at rest, a battery and a thermal
// zone, and an in-process broker.
func newRig(t *testing.T, gpsBaud int) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	sim, err := gpssim.New(gpssim.Config{Log: footprint.Retime(readTrack(t), time.Now(), time.Second), Baud: gpsBaud, Speed: 1, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	go sim.Run(ctx)

	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	tree, err := fakesysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// LIS3DH at ±2 g: 1 mg per count, about 0.0098 m/s².
	dir, err := tree.AddAccel("lis3dh", "0.009806")
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.SetAccel(dir, 12, -20, 1001); err != nil {
		t.Fatal(err)
	}
	temp := 251
	if err := tree.AddBattery("BAT0", fakesysfs.Battery{Capacity: 87, Status: "Discharging", VoltageUV: 3950000, TempDeciC: &temp}); err != nil {
		t.Fatal(err)
	}
	if _, err := tree.AddThermalZone("cpu-thermal", 47500); err != nil {
		t.Fatal(err)
	}

	b := broker.StartMochi(t)
	tmp := t.TempDir()
	cfg := testConfig(t)
	cfg.Device.ID, cfg.Device.Fleet = "car-17", "met"
	cfg.Broker.URLs = []string{b.URL()}
	cfg.Spool.Dir = filepath.Join(tmp, "spool")
	cfg.GPS.Port = sim.Path()
	cfg.Radio.Port = m.Path()
	cfg.Radio.Profile = "lte"
	cfg.Sensors.SysfsRoot = tree.Root
	cfg.Sensors.AccelRate = 50
	cfg.Hooks.Socket = filepath.Join(tmp, "run", "hooks.sock")
	return &rig{cfg: cfg, sim: sim, modem: m, tree: tree}
}

func readTrack(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func run(t *testing.T, cfg config.Config, opts selftest.Options) selftest.Report {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	start := time.Now()
	rep := selftest.Run(context.Background(), cfg, opts)
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	t.Logf("self-test took %s:\n%s", time.Since(start).Round(time.Millisecond), buf.String())
	return rep
}

func result(t *testing.T, rep selftest.Report, part string) selftest.Result {
	t.Helper()
	r, ok := rep.Find(part)
	if !ok {
		t.Fatalf("no %q row in the report", part)
	}
	return r
}

func TestAllPassAgainstSimulators(t *testing.T) {
	t.Parallel()
	r := newRig(t, 9600)
	r.cfg.Hooks.EBPF = true
	rep := run(t, r.cfg, selftest.Options{})

	want := map[string]selftest.Status{
		"gps": selftest.Pass, "radio": selftest.Pass, "accel": selftest.Pass, "battery": selftest.Pass,
		"thermal": selftest.Pass, "gpio": selftest.Skip, "broker": selftest.Pass, "clock": selftest.Pass,
		"spool": selftest.Pass, "hooks socket": selftest.Pass,
	}
	for part, st := range want {
		if got := result(t, rep, part); got.Status != st {
			t.Errorf("%s: %s (%s; hint %q), want %s", part, got.Status, got.Detail, got.Hint, st)
		}
	}
	// eBPF depends on the kernel: it may warn (and say why), never fail.
	if e := result(t, rep, "ebpf"); e.Status != selftest.Pass && (e.Status != selftest.Warn || e.Detail == "") {
		t.Errorf("ebpf: %s %q", e.Status, e.Detail)
	}
	if rep.Failed() {
		t.Error("report failed")
	}
	// The baud rate was detected (gps.baud = 0), and the spool directory
	// made private and left clean.
	if g := result(t, rep, "gps"); !strings.Contains(g.Detail, "9600 baud (detected)") {
		t.Errorf("gps detail %q does not name the detected rate", g.Detail)
	}
	fi, err := os.Stat(r.cfg.Spool.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool dir: %v, mode %v; want created 0700", err, fi.Mode())
	}
	if ents, _ := os.ReadDir(r.cfg.Spool.Dir); len(ents) != 0 {
		t.Errorf("spool dir holds %d entries after the check, want none", len(ents))
	}
	// The report travels as JSON in the fleet command's reply.
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back selftest.Report
	if err := json.Unmarshal(js, &back); err != nil || len(back.Results) != len(rep.Results) || back.Status != rep.Status {
		t.Errorf("JSON round trip: %v; %s", err, js)
	}
}

func TestGPSWrongPort(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.GPS.Port = "/dev/serial/by-id/usb-u-blox_GNSS_receiver-if00-nonexistent"
	rep := run(t, cfg, selftest.Options{})
	g := result(t, rep, "gps")
	if g.Status != selftest.Fail || !strings.Contains(g.Detail, "no such device") || !strings.Contains(g.Hint, "/dev/serial/by-id/") {
		t.Errorf("gps: %s %q hint %q; want a fail pointing at /dev/serial/by-id", g.Status, g.Detail, g.Hint)
	}
	if !rep.Failed() {
		t.Error("report should fail")
	}
}

func TestGPSDanglingLink(t *testing.T) {
	t.Parallel()
	link := filepath.Join(t.TempDir(), "usb-GPS-if00")
	if err := os.Symlink("/dev/ttyUSB-gone", link); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.GPS.Port = link
	g := result(t, run(t, cfg, selftest.Options{}), "gps")
	if g.Status != selftest.Fail || !strings.Contains(g.Detail, "gone") {
		t.Errorf("gps: %s %q; want a fail saying the device is gone", g.Status, g.Detail)
	}
}

func TestGPSWrongBaud(t *testing.T) {
	t.Parallel()
	r := newRig(t, 38400)
	r.cfg.GPS.Baud = 9600
	g := result(t, run(t, r.cfg, selftest.Options{}), "gps")
	if g.Status != selftest.Fail || !strings.Contains(g.Detail, "38400") || !strings.Contains(g.Hint, "gps.baud") {
		t.Errorf("gps: %s %q hint %q; want a fail naming the real rate and gps.baud", g.Status, g.Detail, g.Hint)
	}
}

func TestGPSDetectsOtherBaud(t *testing.T) {
	t.Parallel()
	r := newRig(t, 38400)
	g := result(t, run(t, r.cfg, selftest.Options{}), "gps")
	if g.Status != selftest.Pass || !strings.Contains(g.Detail, "38400 baud (detected)") {
		t.Errorf("gps: %s %q; want a pass at 38400 detected", g.Status, g.Detail)
	}
}

func TestGPSNoFix(t *testing.T) {
	t.Parallel()
	// A receiver before its first fix: RMC void, GGA quality 0, GSV.
	// From gpsd's regression suite (testdata/gpsd), the receiver's
	// start-up sentences.
	log := []byte("$GPRMC,,V,,,,,,,,,,N*53\n$GPGGA,,,,,,0,00,99.99,,,,,,*48\n$GPGSV,1,1,03,07,,,25,08,,,22,30,,,19*7E\n")
	sim, err := gpssim.New(gpssim.Config{Log: log, Speed: 5, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.Run(ctx)
	cfg := testConfig(t)
	cfg.GPS.Port, cfg.GPS.Baud = sim.Path(), 9600
	rep := run(t, cfg, selftest.Options{GPSListen: 1500 * time.Millisecond})
	g := result(t, rep, "gps")
	if g.Status != selftest.Warn || !strings.Contains(g.Detail, "no fix") || !strings.Contains(g.Hint, "sky") {
		t.Errorf("gps: %s %q hint %q; want a warning about the fix", g.Status, g.Detail, g.Hint)
	}
}

func TestClockAgainstOldGPSTime(t *testing.T) {
	t.Parallel()
	// The track as recorded (December 2020) disagrees with the clock by
	// years: one of them is wrong, and the fitter must know.
	sim, err := gpssim.New(gpssim.Config{Log: readTrack(t), Speed: 1, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.Run(ctx)
	cfg := testConfig(t)
	cfg.GPS.Port, cfg.GPS.Baud = sim.Path(), 9600
	c := result(t, run(t, cfg, selftest.Options{}), "clock")
	if c.Status != selftest.Fail || !strings.Contains(c.Detail, "ahead of GPS time") || !strings.Contains(c.Detail, "2020-12-18") {
		t.Errorf("clock: %s %q; want a fail naming the GPS time", c.Status, c.Detail)
	}
}

func TestClockNeverSet(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	now := func() time.Time { return time.Date(1970, 1, 1, 0, 2, 0, 0, time.UTC) }
	c := result(t, run(t, cfg, selftest.Options{Now: now}), "clock")
	if c.Status != selftest.Fail || !strings.Contains(c.Detail, "1970") {
		t.Errorf("clock: %s %q; want a fail", c.Status, c.Detail)
	}
}

func TestRadio(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		profile kestrel.RadioProfile
		setup   func(*atmodem.Modem)
		want    selftest.Status
		detail  string
		hint    string
	}{
		{"lte", kestrel.ProfileLTE, nil, selftest.Pass, "registered (home)", ""},
		{"tetra", kestrel.ProfileTETRA, nil, selftest.Pass, "trunked mode", ""},
		{"silent", kestrel.ProfileLTE, func(m *atmodem.Modem) { m.SetSilent(true) }, selftest.Fail, "no answer to AT", "switched on"},
		{"searching", kestrel.ProfileLTE, func(m *atmodem.Modem) { m.Set(func(s *atmodem.State) { s.Stat = 2 }) }, selftest.Warn, "not registered: searching", "antenna"},
		{"denied", kestrel.ProfileTETRA, func(m *atmodem.Modem) { m.Set(func(s *atmodem.State) { s.Stat = 3 }) }, selftest.Warn, "denied", "provisioning"},
		{"no signal", kestrel.ProfileLTE, func(m *atmodem.Modem) { m.Set(func(s *atmodem.State) { s.RSSI = 99 }) }, selftest.Warn, "no signal", "antenna"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := atmodem.New(tc.profile)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if tc.setup != nil {
				tc.setup(m)
			}
			cfg := testConfig(t)
			cfg.Radio.Port = m.Path()
			cfg.Radio.Profile = map[kestrel.RadioProfile]string{kestrel.ProfileLTE: "lte", kestrel.ProfileTETRA: "tetra"}[tc.profile]
			r := result(t, run(t, cfg, selftest.Options{Timeout: 2 * time.Second}), "radio")
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) || !strings.Contains(r.Hint, tc.hint) {
				t.Errorf("radio: %s %q hint %q; want %s with %q and hint %q", r.Status, r.Detail, r.Hint, tc.want, tc.detail, tc.hint)
			}
			// Read-only: nothing but queries reached the radio.
			for _, c := range m.Commands() {
				if strings.Contains(c, "=") {
					t.Errorf("the check changed a setting: %q", c)
				}
			}
		})
	}
}

func TestBrokerTLS(t *testing.T) {
	t.Parallel()
	ca := broker.NewCA(t)
	b := broker.StartMochi(t, broker.WithTLS(ca))
	other := broker.NewCA(t)
	for _, tc := range []struct {
		name   string
		caFile string
		want   selftest.Status
		detail string
		hint   string
	}{
		// The test CA's client certificate lives a day: a fitter is
		// warned a month ahead.
		{"right CA", ca.CAFile, selftest.Warn, "TLS 1.3, client certificate), logged in by certificate; client certificate expires on", "renew the client certificate"},
		{"wrong CA", other.CAFile, selftest.Fail, "unknown authority", "broker.ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Broker.URLs = []string{b.URL()}
			cfg.Broker.CAFile, cfg.Broker.CertFile, cfg.Broker.KeyFile = tc.caFile, ca.ClientCert, ca.ClientKey
			r := result(t, run(t, cfg, selftest.Options{}), "broker")
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) || !strings.Contains(r.Hint, tc.hint) {
				t.Errorf("broker: %s %q hint %q; want %s with %q, hint %q", r.Status, r.Detail, r.Hint, tc.want, tc.detail, tc.hint)
			}
		})
	}
	t.Run("no client certificate", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Broker.URLs = []string{b.URL()}
		r := result(t, run(t, cfg, selftest.Options{}), "broker")
		// Without broker.ca_file the system roots do not know the test
		// CA: the first thing to fix is the CA.
		if r.Status != selftest.Fail || !strings.Contains(r.Hint, "ca_file") {
			t.Errorf("broker: %s %q hint %q", r.Status, r.Detail, r.Hint)
		}
	})
}

func TestBrokerRefusedAndFailover(t *testing.T) {
	t.Parallel()
	good := broker.StartMochi(t)
	deadURL := refusingURL(t)

	cfg := testConfig(t)
	cfg.Broker.URLs = []string{deadURL}
	r := result(t, run(t, cfg, selftest.Options{}), "broker")
	if r.Status != selftest.Fail || !strings.Contains(r.Detail, "refused") || !strings.Contains(r.Hint, "broker down") {
		t.Errorf("broker: %s %q hint %q; want a refused fail", r.Status, r.Detail, r.Hint)
	}

	// With a working failover the dead one is only a warning.
	cfg.Broker.URLs = []string{deadURL, good.URL()}
	rep := run(t, cfg, selftest.Options{})
	d, g := result(t, rep, "broker "+deadURL), result(t, rep, "broker "+good.URL())
	if d.Status != selftest.Warn || g.Status != selftest.Pass {
		t.Errorf("failover: dead %s %q, good %s %q", d.Status, d.Detail, g.Status, g.Detail)
	}
}

func TestBrokerSecretsNotShown(t *testing.T) {
	t.Parallel()
	b := broker.StartMochi(t)
	pw := filepath.Join(t.TempDir(), "password")
	const secret = "hunter2-do-not-print"
	if err := os.WriteFile(pw, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Broker.URLs = []string{b.URL()}
	cfg.Broker.Username, cfg.Broker.PasswordFile = "car-17", pw
	rep := run(t, cfg, selftest.Options{})
	r := result(t, rep, "broker")
	// Logged in, warned about the file mode, and the password appears
	// nowhere.
	if r.Status != selftest.Warn || !strings.Contains(r.Detail, "logged in as car-17") || !strings.Contains(r.Detail, "password_file is readable by others") {
		t.Errorf("broker: %s %q", r.Status, r.Detail)
	}
	js, _ := json.Marshal(rep)
	var tbl bytes.Buffer
	rep.WriteTable(&tbl)
	if bytes.Contains(js, []byte(secret)) || bytes.Contains(tbl.Bytes(), []byte(secret)) {
		t.Error("the password appears in the report")
	}
}

func TestSpool(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Spool.Dir = filepath.Join(file, "spool")
	r := result(t, run(t, cfg, selftest.Options{}), "spool")
	if r.Status != selftest.Fail || !strings.Contains(r.Detail, "cannot create") {
		t.Errorf("spool under a file: %s %q", r.Status, r.Detail)
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Spool.Dir = open
	r = result(t, run(t, cfg, selftest.Options{}), "spool")
	if r.Status != selftest.Warn || !strings.Contains(r.Hint, "chmod 700") {
		t.Errorf("world-readable spool: %s %q hint %q", r.Status, r.Detail, r.Hint)
	}
}

func TestSensorsMissing(t *testing.T) {
	t.Parallel()
	tree, err := fakesysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Sensors.SysfsRoot = tree.Root
	cfg.Sensors.AccelRate = 25
	rep := run(t, cfg, selftest.Options{})
	if a := result(t, rep, "accel"); a.Status != selftest.Fail || !strings.Contains(a.Hint, "accel_rate = 0") {
		t.Errorf("accel: %s %q hint %q", a.Status, a.Detail, a.Hint)
	}
	// A vehicle gateway has no battery: not fitted is not a fault.
	if b := result(t, rep, "battery"); b.Status != selftest.Skip {
		t.Errorf("battery: %s %q", b.Status, b.Detail)
	}
	// An accelerometer reading 0 g has a wrong scale or is dead.
	dir, _ := tree.AddAccel("bma250", "0")
	_ = dir
	if a := result(t, run(t, cfg, selftest.Options{}), "accel"); a.Status != selftest.Warn || !strings.Contains(a.Hint, "1 g") {
		t.Errorf("accel at 0 g: %s %q hint %q", a.Status, a.Detail, a.Hint)
	}
}

func TestInUseIsSkipped(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.GPS.Port, cfg.Radio.Port = "/dev/ttyS0", "/dev/ttyS1"
	rep := run(t, cfg, selftest.Options{InUse: []string{"gps", "radio"}})
	for _, p := range []string{"gps", "radio"} {
		if r := result(t, rep, p); r.Status != selftest.Skip || !strings.Contains(r.Detail, "running agent") {
			t.Errorf("%s: %s %q", p, r.Status, r.Detail)
		}
	}
}

// testConfig is the defaults with the keys validation requires, and the
// spool and socket in the test's own directory, never the machine's.
func testConfig(t *testing.T) config.Config {
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = "car-17", "met"
	dir := t.TempDir()
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Hooks.Socket = filepath.Join(dir, "run", "hooks.sock")
	return c
}

// refusingURL is a broker URL whose port is bound but not listening, so it
// refuses connections for the whole test: a stopped broker's port could be
// handed to a parallel test's broker.
func refusingURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("tcp://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// TestNoGoroutineLeft: a run leaves nothing running behind it, whether the
// parts answer or not (the fleet command runs it inside the agent).
func TestNoGoroutineLeft(t *testing.T) {
	r := newRig(t, 9600)
	silent, err := atmodem.New(kestrel.ProfileTETRA)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetSilent(true)
	// Let the simulators and broker settle before counting.
	time.Sleep(200 * time.Millisecond)
	before := runtime.NumGoroutine()
	for _, cfg := range []config.Config{r.cfg, func() config.Config {
		c := r.cfg
		c.Radio.Port, c.Radio.Profile = silent.Path(), "tetra"
		c.Broker.URLs = []string{refusingURL(t), r.cfg.Broker.URLs[0]}
		return c
	}()} {
		selftest.Run(context.Background(), cfg, selftest.Options{GPSListen: time.Second, Timeout: time.Second})
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before the runs, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestGPSNoData(t *testing.T) {
	t.Parallel()
	p, err := pty.Open() // a port with nothing on the other end
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cfg := testConfig(t)
	cfg.GPS.Port, cfg.GPS.Baud = p.Path, 9600
	g := result(t, run(t, cfg, selftest.Options{GPSListen: time.Second}), "gps")
	if g.Status != selftest.Fail || !strings.Contains(g.Detail, "no data") || !strings.Contains(g.Hint, "powered") {
		t.Errorf("gps: %s %q hint %q; want a no-data fail", g.Status, g.Detail, g.Hint)
	}
}
