package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// TestEveryLiveKeyHasOneOwner: config.Diff calls these keys live, so a
// part of the agent must apply each, and only one.
func TestEveryLiveKeyHasOneOwner(t *testing.T) {
	a := &Agent{}
	units := a.units()
	for _, p := range config.Paths() {
		if !config.LiveChangeable(p) {
			continue
		}
		n := 0
		for _, u := range units {
			if slices.Contains(u.keys, p) {
				n++
			}
		}
		if n == 0 {
			sec, _, _ := strings.Cut(p, ".")
			for _, u := range units {
				if slices.Contains(u.sections, sec) {
					n++
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d owners, want 1", p, n)
		}
	}
}

// reloadRig is a running agent on a real broker with a GPS and a radio on
// pseudo-terminals.
type reloadRig struct {
	a      *Agent
	cfg    config.Config
	gps    []*pty.PTY
	radio  *pty.PTY
	ca     *broker.CA
	b1, b2 *broker.Broker
	ctx    context.Context
}

func startReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	r := &reloadRig{b1: broker.StartMochi(t), b2: broker.StartMochi(t), ca: broker.NewCA(t)}
	for range 2 {
		p, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		r.gps = append(r.gps, p)
	}
	var err error
	if r.radio, err = pty.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.radio.Close() })
	dir := t.TempDir()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = "car-17", "test"
	c.Broker.URLs = []string{r.b1.URL()}
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.RequireSigned = false
	c.GPS.Port, c.GPS.Baud = r.gps[0].Path, 9600
	c.Radio.Port = r.radio.Path
	c.Sensors.SysfsRoot = filepath.Join(dir, "sys")
	c.Sensors.AccelRate = 1
	c.GPIO.DevRoot = filepath.Join(dir, "dev")
	c.GPIO.Lines = []config.GPIOLine{{Name: "ignition", Chip: "gpiochip0", Offset: 1}}
	c.Hooks.Socket = ""
	r.cfg = c
	r.a, err = New(c, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	r.ctx = ctx
	done := make(chan error, 1)
	go func() { done <- r.a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		r.a.Close()
	})
	// Reload before Run has taken its lock would race the start (and find
	// no session): wait until every part has started.
	select {
	case <-r.a.Started():
	case <-ctx.Done():
		t.Fatal("agent never started")
	}
	return r
}

// TestEveryLiveKeyTakesEffect pushes a change of every key that applies
// live through the real agent's Reload and checks that the part owning it
// now runs with the new value: the policy's settings, the log level, the
// restarted source's or broker session's config, and for the fleet
// controller's keys the running config it reads them from. A few are also
// checked end to end: the GPS port's baud rate and device, and the broker
// the session reaches.
func TestEveryLiveKeyTakesEffect(t *testing.T) {
	r := startReloadRig(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, pub := ed25519Key(t)
	mut := map[string]func(*config.Config){
		"broker.allow_plaintext": func(c *config.Config) { c.Broker.AllowPlaintext = true },
		"broker.batch_age":       func(c *config.Config) { c.Broker.BatchAge = config.D(3 * time.Second) },
		"broker.batch_max":       func(c *config.Config) { c.Broker.BatchMax = 9 },
		"broker.profile":         func(c *config.Config) { c.Broker.Profile = "narrowband" },
		"broker.high_age":        func(c *config.Config) { c.Broker.HighAge = config.D(500 * time.Millisecond) },
		"broker.bulk_age":        func(c *config.Config) { c.Broker.BulkAge = config.D(2 * time.Minute) },
		"broker.ca_file": func(c *config.Config) {
			c.Broker.CAFile, c.Broker.CertFile, c.Broker.KeyFile = r.ca.CAFile, r.ca.ClientCert, r.ca.ClientKey
		},
		"broker.cert_file":           func(c *config.Config) { c.Broker.CertFile, c.Broker.KeyFile = r.ca.IssueClient(t, "car-17a") },
		"broker.key_file":            func(c *config.Config) { c.Broker.CertFile, c.Broker.KeyFile = r.ca.IssueClient(t, "car-17b") },
		"broker.inflight":            func(c *config.Config) { c.Broker.InFlight = 3 },
		"broker.require_client_cert": func(c *config.Config) { c.Broker.RequireClientCert = false },
		"broker.keepalive":           func(c *config.Config) { c.Broker.KeepAlive = config.D(45 * time.Second) },
		"broker.password_file":       func(c *config.Config) { c.Broker.PasswordFile = pw },
		"broker.rate_limit":          func(c *config.Config) { c.Broker.RateLimit = 5000 },
		"broker.state_interval":      func(c *config.Config) { c.Broker.StateInterval = config.D(2 * time.Minute) },
		"broker.urls":                func(c *config.Config) { c.Broker.URLs = []string{r.b2.URL()} },
		"broker.username":            func(c *config.Config) { c.Broker.Username = "car-17" },
		"device.groups":              func(c *config.Config) { c.Device.Group = []string{"north"} },
		"gpio.debounce":              func(c *config.Config) { c.GPIO.Debounce = config.D(50 * time.Millisecond) },
		"gpio.dev_root":              func(c *config.Config) { c.GPIO.DevRoot = filepath.Join(dir, "dev2") },
		"gpio.lines": func(c *config.Config) {
			c.GPIO.Lines = append(c.GPIO.Lines, config.GPIOLine{Name: "siren", Chip: "gpiochip0", Offset: 2})
		},
		"gps.baud":           func(c *config.Config) { c.GPS.Baud = 4800 },
		"gps.port":           func(c *config.Config) { c.GPS.Port = r.gps[1].Path },
		"gps.watchdog":       func(c *config.Config) { c.GPS.Watchdog = config.D(7 * time.Second) },
		"hooks.allow_gids":   func(c *config.Config) { c.Hooks.AllowGIDs = []int{100} },
		"hooks.allow_uids":   func(c *config.Config) { c.Hooks.AllowUIDs = []int{1000} },
		"hooks.exec_allow":   func(c *config.Config) { c.Hooks.ExecAllow = []string{"/usr/bin/true"} },
		"hooks.link_period":  func(c *config.Config) { c.Hooks.LinkPeriod = config.D(30 * time.Second) },
		"hooks.rate":         func(c *config.Config) { c.Hooks.Rate = 7 },
		"hooks.burst":        func(c *config.Config) { c.Hooks.Burst = 9 },
		"hooks.max_conns":    func(c *config.Config) { c.Hooks.MaxConns = 3 },
		"hooks.idle_timeout": func(c *config.Config) { c.Hooks.IdleTimeout = config.D(45 * time.Second) },
		"log.level":          func(c *config.Config) { c.Log.Level = "debug" },
		"privacy.grid":       func(c *config.Config) { c.Privacy.Grid = 500 },
		"privacy.mode":       func(c *config.Config) { c.Privacy.Mode = "coarse" },
		"privacy.on_mode":    func(c *config.Config) { c.Privacy.OnMode = "coarse" },
		"privacy.locked":     func(c *config.Config) { c.Privacy.Locked = true },
		"privacy.docked":     func(c *config.Config) { c.Privacy.Docked = true },
		"privacy.gpio_line":  func(c *config.Config) { c.Privacy.GPIOLine = "ignition" },
		"privacy.schedule":   func(c *config.Config) { c.Privacy.Schedule = []string{"Sat,Sun 00:00-24:00"} },
		"privacy.time_zone":  func(c *config.Config) { c.Privacy.TimeZone = "Europe/London" },
		"privacy.zones": func(c *config.Config) {
			c.Privacy.Zones = []config.PrivacyZone{{Name: "home", Action: "drop", Polygon: [][]float64{{51.5, -0.1}, {51.5, -0.099}, {51.501, -0.099}}}}
		},
		"radio.issi":                   func(c *config.Config) { c.Radio.ISSI = "2342600012345" },
		"radio.baud":                   func(c *config.Config) { c.Radio.Baud = 57600 },
		"radio.heartbeat":              func(c *config.Config) { c.Radio.Heartbeat = config.D(2 * time.Minute) },
		"radio.poll":                   func(c *config.Config) { c.Radio.Poll = config.D(20 * time.Second) },
		"radio.port":                   func(c *config.Config) { c.Radio.Port = r.gps[0].Path }, // any existing tty
		"radio.profile":                func(c *config.Config) { c.Radio.Profile = "tetra" },
		"remote.audit_max":             func(c *config.Config) { c.Remote.AuditMax = 99 },
		"remote.max_message":           func(c *config.Config) { c.Remote.MaxMessage = 32 << 10 },
		"remote.command_max_age":       func(c *config.Config) { c.Remote.CommandMaxAge = config.D(time.Minute) },
		"remote.require_signed":        func(c *config.Config) { c.Remote.RequireSigned = true },
		"remote.rollback_after":        func(c *config.Config) { c.Remote.RollbackAfter = config.D(time.Minute) },
		"remote.trusted_keys":          func(c *config.Config) { c.Remote.TrustedKeys = []string{pub} },
		"sensors.accel_rate":           func(c *config.Config) { c.Sensors.AccelRate = 5 },
		"sensors.battery_period":       func(c *config.Config) { c.Sensors.BatteryPeriod = config.D(2 * time.Minute) },
		"sensors.sysfs_root":           func(c *config.Config) { c.Sensors.SysfsRoot = filepath.Join(dir, "sys2") },
		"sensors.thermal_period":       func(c *config.Config) { c.Sensors.ThermalPeriod = config.D(2 * time.Minute) },
		"spool.max_bytes":              func(c *config.Config) { c.Spool.MaxBytes = 128 << 20 },
		"spool.max_age":                func(c *config.Config) { c.Spool.MaxAge = config.D(24 * time.Hour) },
		"spool.sync_interval":          func(c *config.Config) { c.Spool.SyncInterval = config.D(2 * time.Second) },
		"tracking.distance":            func(c *config.Config) { c.Tracking.Distance = 25 },
		"motion.crash":                 func(c *config.Config) { c.Motion.Crash = 30 },
		"motion.crash_holdoff":         func(c *config.Config) { c.Motion.CrashHoldoff = config.D(20 * time.Second) },
		"motion.gravity_tau":           func(c *config.Config) { c.Motion.GravityTau = config.D(20 * time.Second) },
		"motion.harsh_accel":           func(c *config.Config) { c.Motion.HarshAccel = 3 },
		"motion.harsh_brake":           func(c *config.Config) { c.Motion.HarshBrake = 5 },
		"motion.harsh_corner":          func(c *config.Config) { c.Motion.HarshCorner = 5 },
		"motion.harsh_duration":        func(c *config.Config) { c.Motion.HarshDuration = config.D(time.Second) },
		"motion.mounting":              func(c *config.Config) { c.Motion.Mounting = "-y,+x,+z" },
		"power.ignition_line":          func(c *config.Config) { c.Power.IgnitionLine = "ign2" },
		"power.battery_low":            func(c *config.Config) { c.Power.BatteryLow = 25 },
		"power.wake_hold":              func(c *config.Config) { c.Power.WakeHold = config.D(time.Minute) },
		"power.reduced_interval":       func(c *config.Config) { c.Power.ReducedInterval = config.D(2 * time.Minute) },
		"power.reduced_radio_poll":     func(c *config.Config) { c.Power.ReducedRadioPoll = config.D(2 * time.Minute) },
		"power.low_power_after":        func(c *config.Config) { c.Power.LowPowerAfter = config.D(time.Hour) },
		"power.low_interval":           func(c *config.Config) { c.Power.LowInterval = config.D(2 * time.Hour) },
		"power.low_radio_poll":         func(c *config.Config) { c.Power.LowRadioPoll = config.D(10 * time.Minute) },
		"sensors.dev_root":             func(c *config.Config) { c.Sensors.DevRoot = filepath.Join(dir, "dev3") },
		"evidence.checkpoint_records":  func(c *config.Config) { c.Evidence.CheckpointRecords = 50 },
		"evidence.checkpoint_interval": func(c *config.Config) { c.Evidence.CheckpointInterval = config.D(time.Minute) },
		"remote.config_threshold":      func(c *config.Config) { c.Remote.ConfigThreshold = 2 },
		"remote.command_threshold":     func(c *config.Config) { c.Remote.CommandThreshold = 2 },
		"remote.release_threshold":     func(c *config.Config) { c.Remote.ReleaseThreshold = 2 },
		"update.health_timeout":        func(c *config.Config) { c.Update.HealthTimeout = config.D(30 * time.Second) },
		"update.rate":                  func(c *config.Config) { c.Update.Rate = 1024 },
		"tracking.emergency_window": func(c *config.Config) {
			c.Tracking.EmergencyWindow = config.D(5 * time.Minute)
		},
		"tracking.force_events":  func(c *config.Config) { c.Tracking.ForceEvents = []string{"emergency"} },
		"tracking.heading":       func(c *config.Config) { c.Tracking.Heading = 30 },
		"tracking.max_interval":  func(c *config.Config) { c.Tracking.MaxInterval = config.D(2 * time.Minute) },
		"tracking.min_interval":  func(c *config.Config) { c.Tracking.MinInterval = config.D(2 * time.Second) },
		"tracking.speed":         func(c *config.Config) { c.Tracking.Speed = 5 },
		"tracking.stop_interval": func(c *config.Config) { c.Tracking.StopInterval = config.D(10 * time.Minute) },
		"tracking.stop_speed":    func(c *config.Config) { c.Tracking.StopSpeed = 2 },
	}
	for _, p := range config.Paths() {
		if config.LiveChangeable(p) && mut[p] == nil {
			t.Errorf("%s: no case in this test", p)
		}
	}
	units := r.a.units()
	for _, path := range config.Paths() {
		m := mut[path]
		if m == nil {
			continue
		}
		before := r.a.Config()
		next := config.Clone(before)
		m(&next)
		changes, err := r.a.Reload(r.ctx, next)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if i := slices.IndexFunc(changes, func(c config.Change) bool { return c.Path == path }); i < 0 || changes[i].Applies != config.Live {
			t.Errorf("%s: changes %v", path, changes)
			continue
		}
		want, _ := config.Get(next, path)
		if got, _ := config.Get(r.a.Config(), path); got != want {
			t.Errorf("%s: running config has %q, want %q", path, got, want)
		}
		u := owner(units, path)
		var got string
		switch u.name {
		case "policy":
			tr, pr := r.a.policy.Config()
			c := before
			c.Tracking, c.Privacy = tr, pr
			c.Radio.ISSI = r.a.policy.OwnIdentity()
			got, _ = config.Get(c, path)
		case "power":
			c := before
			c.Power = r.a.power.Config()
			got, _ = config.Get(c, path)
		case "motion":
			c := before
			c.Motion = r.a.motion.Config()
			got, _ = config.Get(c, path)
		case "evidence":
			r.a.mu.Lock()
			c := before
			c.Evidence = config.Evidence{CheckpointRecords: int(r.a.ev.records), CheckpointInterval: config.D(r.a.ev.interval)}
			r.a.mu.Unlock()
			got, _ = config.Get(c, path)
		case "log":
			got = map[bool]string{true: "debug", false: "not debug"}[r.a.level.Level() == slog.LevelDebug]
		case "spool":
			got, _ = config.Get(r.a.Config(), path)
			if path == "spool.max_bytes" {
				got = fmt.Sprint(r.a.spool.Metrics().MaxBytes)
			}
		case "fleet":
			got, _ = config.Get(r.a.Config(), path) // the controller reads it there
		case "broker":
			r.a.mu.Lock()
			got, _ = config.Get(r.a.sess.cfg, path)
			r.a.mu.Unlock()
		default:
			r.a.mu.Lock()
			n := 0
			for _, spec := range r.a.buildSources(next) {
				if spec.section != u.name {
					continue
				}
				n++
				rs := r.a.srcs[spec.name]
				if rs == nil {
					t.Errorf("%s: source %s not running", path, spec.name)
					continue
				}
				got, _ = config.Get(rs.cfg, path)
			}
			r.a.mu.Unlock()
			if n == 0 {
				t.Errorf("%s: no %s source runs", path, u.name)
			}
		}
		if got != want {
			t.Errorf("%s: part %s runs with %q, want %q", path, u.name, got, want)
		}
		// End to end, for the parts a wrong value would silently break.
		switch path {
		case "gps.baud":
			waitFor(t, path, func() bool { b, err := r.gps[0].Baud(); return err == nil && b == 4800 })
		case "gps.port":
			waitFor(t, path, func() bool { b, err := r.gps[1].Baud(); return err == nil && b == 4800 })
		case "broker.urls":
			waitFor(t, path, func() bool { return r.a.connected() })
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Errorf("%s: the change never took effect", what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadRefusesWhole: a pushed gps.port that does not exist is refused
// before anything applies, together with the rest of the change.
func TestReloadRefusesWhole(t *testing.T) {
	r := startReloadRig(t)
	before := r.a.Config()
	next := config.Clone(before)
	next.GPS.Port = "/dev/ttyS9-not-here"
	next.Tracking.Distance = 7
	changes, err := r.a.Reload(r.ctx, next)
	if !errors.Is(err, config.ErrRefused) {
		t.Fatalf("missing gps.port: %v, want ErrRefused", err)
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Path != "gps.port" {
		t.Fatalf("error does not name gps.port: %v", err)
	}
	if i := slices.IndexFunc(changes, func(c config.Change) bool { return c.Path == "gps.port" }); i < 0 || changes[i].Applies != config.Refused {
		t.Fatalf("changes %v", changes)
	}
	if got := r.a.Config(); got.GPS.Port != before.GPS.Port || got.Tracking.Distance != before.Tracking.Distance {
		t.Fatalf("a refused change applied: port %q distance %v", got.GPS.Port, got.Tracking.Distance)
	}
	if tr, _ := r.a.policy.Config(); tr.Distance != before.Tracking.Distance {
		t.Fatal("the policy took part of a refused change")
	}
}

// TestReloadRestartKeys: keys that only apply at restart are accepted,
// said so, and keep their running value; the state message lists them.
func TestReloadRestartKeys(t *testing.T) {
	r := startReloadRig(t)
	before := r.a.Config()
	next := config.Clone(before)
	next.Spool.MaxBytes = 2 << 20 // under four of the 4 MiB segments chosen at open
	next.Spool.Dir = filepath.Join(t.TempDir(), "elsewhere")
	next.Tracking.Distance = 9
	changes, err := r.a.Reload(r.ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		want := config.AtRestart
		if c.Path == "tracking.distance" {
			want = config.Live
		}
		if c.Applies != want {
			t.Errorf("%s applies %s, want %s", c.Path, c.Applies, want)
		}
	}
	got := r.a.Config()
	if got.Spool.MaxBytes != before.Spool.MaxBytes || got.Spool.Dir != before.Spool.Dir || got.Tracking.Distance != 9 {
		t.Fatalf("running config: max_bytes %d dir %s distance %v", got.Spool.MaxBytes, got.Spool.Dir, got.Tracking.Distance)
	}
	pend, _ := r.a.stateFields()["restart_pending"].([]any)
	if len(pend) != 2 || pend[0] != "spool.dir" || pend[1] != "spool.max_bytes" {
		t.Fatalf("state restart_pending %v", pend)
	}
}

func ed25519Key(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv, base64.StdEncoding.EncodeToString(pub)
}
