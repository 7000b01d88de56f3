package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config/offduty"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// Validate checks every key and returns all problems, each a FieldError
// naming its key path, joined with errors.Join; nil if the config is good.
func (c Config) Validate() error {
	v := &validator{}
	v.name("device.id", c.Device.ID, true)
	v.name("device.fleet", c.Device.Fleet, true)
	seen := map[string]bool{}
	for i, g := range c.Device.Group {
		v.name(fmt.Sprintf("device.groups[%d]", i), g, true)
		if seen[g] {
			v.add(fmt.Sprintf("device.groups[%d]", i), "duplicate group %q", g)
		}
		seen[g] = true
	}

	b := c.Broker
	if len(b.URLs) == 0 {
		v.add("broker.urls", "at least one broker URL is required")
	}
	valid := map[int]bool{}
	for i, u := range b.URLs {
		if err := CheckBrokerURL(u, b.AllowPlaintext); err != nil {
			v.errs = append(v.errs, &FieldError{Path: fmt.Sprintf("broker.urls[%d]", i), Err: fmt.Errorf("%w: %w", ErrInvalidValue, err)})
			continue
		}
		valid[i] = true
	}
	if (b.CertFile == "") != (b.KeyFile == "") {
		v.add("broker.key_file", "cert_file and key_file go together")
	}
	if b.RequireClientCert {
		v.mutualTLS(b, valid)
	}
	if b.Profile != "lte" && b.Profile != "narrowband" {
		v.add("broker.profile", "want lte or narrowband, got %q", b.Profile)
	}
	if b.KeepAlive.Duration != 0 {
		v.durMin("broker.keepalive", b.KeepAlive, time.Second)
	}
	v.intRange("broker.batch_max", b.BatchMax, 1, 10000)
	v.durMin("broker.batch_age", b.BatchAge, 0)
	v.durMin("broker.high_age", b.HighAge, 0)
	if b.HighAge.Duration > time.Second {
		v.add("broker.high_age", "at most 1s, got %v", b.HighAge.Duration)
	}
	v.durMin("broker.bulk_age", b.BulkAge, 0)
	v.intRange("broker.inflight", b.InFlight, 1, 65535)
	v.intRange("broker.rate_limit", b.RateLimit, 0, 1<<30)
	if b.StateInterval.Duration != 0 {
		v.durMin("broker.state_interval", b.StateInterval, 10*time.Second)
	}

	s := c.Spool
	if strings.TrimSpace(s.Dir) == "" {
		v.add("spool.dir", "required")
	}
	if s.MaxBytes < 1<<20 {
		v.add("spool.max_bytes", "must be at least 1048576 (1 MiB), got %d", s.MaxBytes)
	}
	v.durMin("spool.max_age", s.MaxAge, 0)
	v.durMin("spool.sync_interval", s.SyncInterval, 0)

	v.intRange("evidence.checkpoint_records", c.Evidence.CheckpointRecords, 1, 1_000_000)
	v.durMin("evidence.checkpoint_interval", c.Evidence.CheckpointInterval, time.Second)

	v.baud("gps.baud", c.GPS.Baud, true)
	v.durMin("gps.watchdog", c.GPS.Watchdog, 100*time.Millisecond)

	r := c.Radio
	if r.Profile != "tetra" && r.Profile != "lte" {
		v.add("radio.profile", "want tetra or lte, got %q", r.Profile)
	}
	v.baud("radio.baud", r.Baud, false)
	v.durMin("radio.poll", r.Poll, 100*time.Millisecond)
	v.durMin("radio.heartbeat", r.Heartbeat, 0)

	if c.Sensors.AccelRate < 0 || c.Sensors.AccelRate > 1000 {
		v.add("sensors.accel_rate", "want 0 to 1000 Hz, got %g", c.Sensors.AccelRate)
	}
	v.durMin("sensors.battery_period", c.Sensors.BatteryPeriod, 0)
	v.durMin("sensors.thermal_period", c.Sensors.ThermalPeriod, 0)

	m := c.Motion
	if _, err := ParseMounting(m.Mounting); err != nil {
		v.add("motion.mounting", "%v", err)
	}
	v.floatRange("motion.harsh_accel", m.HarshAccel, 0, 100)
	v.floatRange("motion.harsh_brake", m.HarshBrake, 0, 100)
	v.floatRange("motion.harsh_corner", m.HarshCorner, 0, 100)
	v.floatRange("motion.crash", m.Crash, 0, 2000)
	v.durMin("motion.harsh_duration", m.HarshDuration, 0)
	v.durMin("motion.crash_holdoff", m.CrashHoldoff, 0)
	v.durMin("motion.gravity_tau", m.GravityTau, time.Second)

	pw := c.Power
	v.intRange("power.battery_low", pw.BatteryLow, 0, 100)
	v.durMin("power.wake_hold", pw.WakeHold, 0)
	v.durMin("power.reduced_interval", pw.ReducedInterval, time.Second)
	v.durMin("power.reduced_radio_poll", pw.ReducedRadioPoll, 100*time.Millisecond)
	v.durMin("power.low_power_after", pw.LowPowerAfter, 0)
	v.durMin("power.low_interval", pw.LowInterval, time.Second)
	v.durMin("power.low_radio_poll", pw.LowRadioPoll, 100*time.Millisecond)

	v.durMin("gpio.debounce", c.GPIO.Debounce, 0)
	names := map[string]bool{}
	for i, l := range c.GPIO.Lines {
		p := fmt.Sprintf("gpio.lines[%d]", i)
		v.name(p+".name", l.Name, true)
		if names[l.Name] {
			v.add(p+".name", "duplicate line name %q", l.Name)
		}
		names[l.Name] = true
		if l.Chip == "" || strings.ContainsAny(l.Chip, "/\x00") {
			v.add(p+".chip", "want a chip name such as gpiochip0, got %q", l.Chip)
		}
		v.intRange(p+".offset", l.Offset, 0, 1023)
		if l.Priority != "" {
			if _, err := kestrel.ParsePriority(l.Priority); err != nil {
				v.add(p+".priority", "%v", err)
			}
		}
	}

	for i, id := range c.Hooks.AllowUIDs {
		v.intRange(fmt.Sprintf("hooks.allow_uids[%d]", i), id, 0, 1<<31-1)
	}
	for i, id := range c.Hooks.AllowGIDs {
		v.intRange(fmt.Sprintf("hooks.allow_gids[%d]", i), id, 0, 1<<31-1)
	}
	for i, p := range c.Hooks.ExecAllow {
		if !strings.HasPrefix(p, "/") {
			v.add(fmt.Sprintf("hooks.exec_allow[%d]", i), "want an absolute path, got %q", p)
		}
	}
	v.durMin("hooks.link_period", c.Hooks.LinkPeriod, 0)
	if c.Hooks.Rate <= 0 || c.Hooks.Rate > 1000 {
		v.add("hooks.rate", "want events per second in (0, 1000], got %g", c.Hooks.Rate)
	}
	v.intRange("hooks.burst", c.Hooks.Burst, 1, 10000)
	v.intRange("hooks.max_conns", c.Hooks.MaxConns, 1, 1024)
	v.durMin("hooks.idle_timeout", c.Hooks.IdleTimeout, time.Second)

	t := c.Tracking
	v.durMin("tracking.min_interval", t.MinInterval, 0)
	v.durMin("tracking.max_interval", t.MaxInterval, 0)
	if t.MaxInterval.Duration > 0 && t.MaxInterval.Duration < t.MinInterval.Duration {
		v.add("tracking.max_interval", "%s is below tracking.min_interval %s", t.MaxInterval, t.MinInterval)
	}
	v.floatRange("tracking.distance", t.Distance, 0, 1e6)
	v.floatRange("tracking.heading", t.Heading, 0, 180)
	v.floatRange("tracking.speed", t.Speed, 0, 500)
	v.floatRange("tracking.stop_speed", t.StopSpeed, 0, 100)
	v.durMin("tracking.stop_interval", t.StopInterval, 0)
	for i, e := range t.ForceEvents {
		if e == "all" {
			continue
		}
		if _, err := kestrel.ParseEventType(e); err != nil {
			v.add(fmt.Sprintf("tracking.force_events[%d]", i), "%v", err)
		}
	}
	v.durMin("tracking.emergency_window", t.EmergencyWindow, 0)

	pr := c.Privacy
	switch pr.Mode {
	case "off", "pause", "coarse":
	default:
		v.add("privacy.mode", "want off, pause or coarse, got %q", pr.Mode)
	}
	if pr.OnMode != "pause" && pr.OnMode != "coarse" {
		v.add("privacy.on_mode", "want pause or coarse, got %q", pr.OnMode)
	}
	if (pr.Mode == "coarse" || pr.OnMode == "coarse" || hasCoarseZone(pr)) && (pr.Grid < 10 || pr.Grid > 100000) {
		v.add("privacy.grid", "want 10 to 100000 metres for coarse mode, got %g", pr.Grid)
	}
	if pr.GPIOLine != "" && !names[pr.GPIOLine] {
		v.add("privacy.gpio_line", "%q is not one of gpio.lines", pr.GPIOLine)
	}
	loc, err := time.LoadLocation(pr.TimeZone)
	if err != nil || pr.TimeZone == "Local" {
		v.add("privacy.time_zone", "want an IANA time zone such as Europe/London or UTC, got %q", pr.TimeZone)
	} else if _, err := offduty.ParseSchedule(pr.Schedule, loc); err != nil {
		v.add("privacy.schedule", "%v", err)
	}
	if len(pr.Zones) > offduty.MaxZones {
		v.add("privacy.zones", "%d zones, at most %d", len(pr.Zones), offduty.MaxZones)
	} else {
		zones := map[string]bool{}
		for i, z := range pr.Zones {
			if _, err := offduty.NewZone(z.Name, z.Action, z.Polygon); err != nil {
				v.add(fmt.Sprintf("privacy.zones[%d]", i), "%v", err)
			}
			if zones[z.Name] {
				v.add(fmt.Sprintf("privacy.zones[%d].name", i), "duplicate zone name %q", z.Name)
			}
			zones[z.Name] = true
		}
	}

	if id := c.Radio.ISSI; id != "" && (len(id) > 32 || strings.Trim(id, "0123456789") != "") {
		v.add("radio.issi", "want the radio's ISSI or ITSI in decimal digits, got %q", id)
	}

	rm := c.Remote
	for i, k := range rm.TrustedKeys {
		if _, _, err := ParseTrustedKey(k); err != nil {
			v.add(fmt.Sprintf("remote.trusted_keys[%d]", i), "%v", err)
		}
	}
	v.durMin("remote.rollback_after", rm.RollbackAfter, time.Second)
	if strings.TrimSpace(rm.StateFile) == "" {
		v.add("remote.state_file", "required")
	}
	v.durMin("remote.command_max_age", rm.CommandMaxAge, time.Second)
	v.intRange("remote.audit_max", rm.AuditMax, 1, 100000)
	v.intRange("remote.config_threshold", rm.ConfigThreshold, 1, MaxThreshold)
	v.intRange("remote.command_threshold", rm.CommandThreshold, 1, MaxThreshold)
	v.intRange("remote.release_threshold", rm.ReleaseThreshold, 1, MaxThreshold)
	if d := c.Update.HealthTimeout.Duration; d < 10*time.Second || d > time.Hour {
		v.add("update.health_timeout", "%v: want 10s to 1h", d)
	}
	if r := c.Update.Rate; r != 0 && (r < 256 || r > 64<<20) {
		v.add("update.rate", "%d: want 0 (the link profile's) or 256 to 67108864 bytes/s", r)
	}
	v.intRange("remote.max_message", rm.MaxMessage, 4<<10, 1<<20)

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		v.add("log.format", "want text or json, got %q", c.Log.Format)
	}
	return errors.Join(v.errs...)
}

// MaxThreshold bounds remote.config_threshold and command_threshold, and
// so the signatures an envelope may carry.
const MaxThreshold = 16

// KeyRoles are what a trusted key may sign: configs, commands, releases.
var KeyRoles = []string{"config", "commands", "release"}

// ParseTrustedKey decodes a remote.trusted_keys entry: a public key
// (ParsePublicKey), optionally after its roles, "config+commands:KEY". A
// bare key has every role. The roles are returned sorted.
func ParseTrustedKey(s string) (ed25519.PublicKey, []string, error) {
	s = strings.TrimSpace(s)
	roles := KeyRoles
	if r, k, ok := strings.Cut(s, ":"); ok {
		roles = nil
		for _, role := range strings.Split(r, "+") {
			if !slices.Contains(KeyRoles, role) {
				return nil, nil, fmt.Errorf("unknown key role %q: want %s, joined by +", role, strings.Join(KeyRoles, ", "))
			}
			if !slices.Contains(roles, role) {
				roles = append(roles, role)
			}
		}
		s = k
	}
	pub, err := ParsePublicKey(s)
	if err != nil {
		return nil, nil, err
	}
	roles = slices.Clone(roles)
	slices.Sort(roles)
	return pub, roles, nil
}

// ParsePublicKey decodes a trusted key: standard base64 of the 32-byte
// Ed25519 public key, as kestrelctl keygen writes it.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("want a %d-byte Ed25519 public key, got %d bytes", ed25519.PublicKeySize, len(b))
	}
	return ed25519.PublicKey(b), nil
}

// ErrPlaintext marks a plaintext broker URL to a non-loopback host.
var ErrPlaintext = mqtt.ErrPlaintext

// ErrURLCredentials marks a broker URL with a user or password in it.
var ErrURLCredentials = mqtt.ErrURLCredentials

// CheckBrokerURL checks one broker URL by the very rules `kestrel run`
// applies (mqtt.ParseBrokerURL): a scheme the session dials, a host, a
// port in range or none, no user or password, and plaintext only to
// loopback unless allowPlaintext.
func CheckBrokerURL(raw string, allowPlaintext bool) error {
	_, err := mqtt.ParseBrokerURL(raw, allowPlaintext)
	return err
}

// IsLoopback reports whether host names the local machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// mutualTLS checks broker.require_client_cert: every broker that is not on
// loopback is reached over TLS with a CA and a client certificate. A
// loopback broker (a bridge on the device itself) is exempt: the link that
// leaves the device is the bridge's.
func (v *validator) mutualTLS(b Broker, valid map[int]bool) {
	var remote []string
	for i, raw := range b.URLs {
		u, err := mqtt.ParseBrokerURL(raw, true)
		if !valid[i] || err != nil || u.Loopback {
			continue // a bad URL is reported already
		}
		if !u.TLS {
			v.add(fmt.Sprintf("broker.urls[%d]", i), "%q is plaintext, and broker.require_client_cert = true needs mutual TLS to a broker that is not on loopback: use tls:// with broker.ca_file, broker.cert_file and broker.key_file, or set broker.require_client_cert = false", mqtt.RedactURL(raw))
			continue
		}
		remote = append(remote, mqtt.RedactURL(raw))
	}
	if len(remote) == 0 {
		return
	}
	var missing []string
	for _, k := range []struct{ key, val string }{{"broker.ca_file", b.CAFile}, {"broker.cert_file", b.CertFile}, {"broker.key_file", b.KeyFile}} {
		if strings.TrimSpace(k.val) == "" {
			missing = append(missing, k.key)
		}
	}
	if len(missing) > 0 {
		v.add(missing[0], "mutual TLS is required for %s (broker.require_client_cert = true): set %s, or set broker.require_client_cert = false to run without a client certificate (the state message then says \"mtls\": false)",
			strings.Join(remote, ", "), strings.Join(missing, ", "))
	}
}

// MutualTLS reports whether every connection to the brokers authenticates
// both ends: a client certificate and key are set and every URL is TLS.
func (b Broker) MutualTLS() bool {
	if b.CertFile == "" || b.KeyFile == "" || len(b.URLs) == 0 {
		return false
	}
	for _, raw := range b.URLs {
		u, err := mqtt.ParseBrokerURL(raw, true)
		if err != nil || !u.TLS {
			return false
		}
	}
	return true
}

type validator struct{ errs []error }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalidValue}, args...)...)})
}

// name checks an identifier used in MQTT topics: no wildcards, separators
// or leading '_' (reserved for _all and _group).
func (v *validator) name(path, s string, required bool) {
	if s == "" {
		if required {
			v.add(path, "required")
		}
		return
	}
	if len(s) > 64 {
		v.add(path, "longer than 64 characters")
		return
	}
	if s[0] == '_' {
		v.add(path, "%q: must not start with '_' (reserved for _all and _group)", s)
		return
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			v.add(path, "%q: only letters, digits, '.', '-' and '_' are allowed", s)
			return
		}
	}
}

func (v *validator) durMin(path string, d Duration, min time.Duration) {
	if d.Duration < min {
		v.add(path, "must be at least %s, got %s", min, d.Duration)
	}
}

func (v *validator) intRange(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "want %d to %d, got %d", lo, hi, n)
	}
}

func (v *validator) floatRange(path string, x, lo, hi float64) {
	if !(x >= lo && x <= hi) { // also catches NaN
		v.add(path, "want %g to %g, got %g", lo, hi, x)
	}
}

var bauds = map[int]bool{1200: true, 2400: true, 4800: true, 9600: true, 19200: true, 38400: true, 57600: true, 115200: true, 230400: true, 460800: true, 921600: true}

func (v *validator) baud(path string, n int, zeroOK bool) {
	if n == 0 && zeroOK {
		return
	}
	if !bauds[n] {
		v.add(path, "unsupported baud rate %d (want 4800, 9600, 19200, 38400, 57600, 115200, ...)", n)
	}
}

func hasCoarseZone(p Privacy) bool {
	for _, z := range p.Zones {
		if z.Action == "coarse" {
			return true
		}
	}
	return false
}
