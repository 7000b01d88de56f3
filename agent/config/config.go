// Package config holds the agent's configuration: the TOML file format,
// defaults, validation, --set overrides, live-reload rules and atomic
// persistence. Signed remote configuration lives in agent/fleetctl (the
// protocol in transport/fleet) and uses Overlay to lay a fleet manager's
// partial config over the local one.
//
// Every key has a dotted path ("gps.baud") built from the toml tags below;
// the same path is used by --set, by validation errors, by Diff and in the
// reports sent back to the fleet manager.
package config

import "time"

// Config is the whole agent configuration. The TOML keys are the
// lowercase dotted paths used by --set (for example "gps.baud").
type Config struct {
	// Version is the remote config version that produced this config; 0 for
	// a purely local config. It only grows (see agent/fleetctl).
	Version  uint64   `toml:"version"`
	Device   Device   `toml:"device"`
	Broker   Broker   `toml:"broker"`
	Spool    Spool    `toml:"spool"`
	GPS      GPS      `toml:"gps"`
	Radio    Radio    `toml:"radio"`
	Sensors  Sensors  `toml:"sensors"`
	Motion   Motion   `toml:"motion"`
	Power    Power    `toml:"power"`
	GPIO     GPIO     `toml:"gpio"`
	Hooks    Hooks    `toml:"hooks"`
	Tracking Tracking `toml:"tracking"`
	Privacy  Privacy  `toml:"privacy"`
	Evidence Evidence `toml:"evidence"`
	Remote   Remote   `toml:"remote"`
	Update   Update   `toml:"update"`
	Log      Log      `toml:"log"`
	Status   Status   `toml:"status"`
}

// Evidence is the hash chain's signed checkpoints (docs/evidence.md).
type Evidence struct {
	// CheckpointRecords: a checkpoint after this many chained records.
	CheckpointRecords int `toml:"checkpoint_records"`
	// CheckpointInterval: a checkpoint once this long has passed since
	// the last one, at the next record (an idle device sends none).
	CheckpointInterval Duration `toml:"checkpoint_interval"`
}

// Status is the local control socket (agent/localctl) on which `kestrel
// status` and `kestrel selftest` ask the running agent for its state.
type Status struct {
	Socket string `toml:"socket"`
}

type Device struct {
	ID    string   `toml:"id"`
	Fleet string   `toml:"fleet"`
	Group []string `toml:"groups"`
	// KeyFile is the device's own Ed25519 key (agent/identity), made at
	// first boot; empty means device.key beside remote.state_file.
	KeyFile string `toml:"key_file"`
}

type Broker struct {
	URLs           []string `toml:"urls"`
	AllowPlaintext bool     `toml:"allow_plaintext"`
	CAFile         string   `toml:"ca_file"`
	CertFile       string   `toml:"cert_file"`
	KeyFile        string   `toml:"key_file"`
	// RequireClientCert: a broker that is not on loopback must be reached
	// over TLS with a client certificate (mutual TLS). Off only by saying
	// so in the local file; the state message then reports "mtls": false.
	RequireClientCert bool   `toml:"require_client_cert"`
	Username          string `toml:"username"`
	PasswordFile      string `toml:"password_file"`
	// Profile is the link profile (lte or narrowband): it sets the batch
	// ages, keepalive and ping timeout that are left at 0.
	Profile   string   `toml:"profile"`
	KeepAlive Duration `toml:"keepalive"`
	BatchMax  int      `toml:"batch_max"`
	BatchAge  Duration `toml:"batch_age"`
	HighAge   Duration `toml:"high_age"`
	BulkAge   Duration `toml:"bulk_age"`
	InFlight  int      `toml:"inflight"`
	RateLimit int      `toml:"rate_limit"` // bytes per second, 0 = unlimited
	// StateInterval is the longest the retained state message goes
	// unrepublished while nothing meaningful in it changes (0: the
	// profile's, lte 1m, narrowband 15m); a meaningful change republishes
	// it at once (agent/state.go).
	StateInterval Duration `toml:"state_interval"`
}

type Spool struct {
	Dir          string   `toml:"dir"`
	MaxBytes     int64    `toml:"max_bytes"`
	MaxAge       Duration `toml:"max_age"`
	SyncInterval Duration `toml:"sync_interval"`
	// Encrypt seals every record payload written to the spool with
	// AES-256-GCM (docs/spool.md, "Encryption at rest").
	Encrypt bool `toml:"encrypt"`
	// KeyFile is the spool key (0600, made at first use); empty:
	// spool.key beside the device key.
	KeyFile string `toml:"key_file"`
}

type GPS struct {
	Port     string   `toml:"port"` // empty disables GPS
	Baud     int      `toml:"baud"` // 0 = detect
	Watchdog Duration `toml:"watchdog"`
}

type Radio struct {
	Port      string   `toml:"port"`    // empty disables the radio
	Profile   string   `toml:"profile"` // "tetra" or "lte"
	Baud      int      `toml:"baud"`
	Poll      Duration `toml:"poll"`
	Heartbeat Duration `toml:"heartbeat"`
	// ISSI is this device's own TETRA radio identity (ISSI, or the
	// full ITSI). Only an emergency from it lifts privacy; empty: the
	// identity the radio reports for itself (+CNUMF) is used.
	ISSI string `toml:"issi"`
}

type Sensors struct {
	SysfsRoot     string   `toml:"sysfs_root"`
	DevRoot       string   `toml:"dev_root"`   // holds iio:deviceN, the buffered interface
	AccelRate     float64  `toml:"accel_rate"` // Hz; 0 disables
	BatteryPeriod Duration `toml:"battery_period"`
	ThermalPeriod Duration `toml:"thermal_period"`
}

// Motion is the driving-event detector on the accelerometer (agent/motion,
// docs/radio.md "Motion events"). Thresholds are in m/s² on the vehicle
// frame with gravity removed; 0 disables that event.
type Motion struct {
	// Mounting names the sensor axes that point along the vehicle's
	// forward, left and up axes, e.g. "+x,+y,+z" (the default) or
	// "-y,+x,+z" for a part turned 90° to the right.
	Mounting      string   `toml:"mounting"`
	HarshAccel    float64  `toml:"harsh_accel"`    // m/s², forward
	HarshBrake    float64  `toml:"harsh_brake"`    // m/s², backward
	HarshCorner   float64  `toml:"harsh_corner"`   // m/s², either side
	HarshDuration Duration `toml:"harsh_duration"` // least time over a harsh threshold
	Crash         float64  `toml:"crash"`          // m/s², horizontal peak: an emergency
	CrashHoldoff  Duration `toml:"crash_holdoff"`  // one emergency per impact
	GravityTau    Duration `toml:"gravity_tau"`    // time constant of the gravity estimate
}

// Power is the power policy (agent/power): reporting follows the ignition
// and the battery.
type Power struct {
	IgnitionLine     string   `toml:"ignition_line"`      // a gpio.lines name; "" = no ignition input
	BatteryLow       int      `toml:"battery_low"`        // percent; 0 = ignore the battery
	WakeHold         Duration `toml:"wake_hold"`          // full reporting after movement or an emergency
	ReducedInterval  Duration `toml:"reduced_interval"`   // positions at most this often when saving
	ReducedRadioPoll Duration `toml:"reduced_radio_poll"` // radio poll when saving
	LowPowerAfter    Duration `toml:"low_power_after"`    // reduced this long: low power; 0 never
	LowInterval      Duration `toml:"low_interval"`       // positions in low power
	LowRadioPoll     Duration `toml:"low_radio_poll"`     // radio poll in low power
}

type GPIO struct {
	DevRoot  string     `toml:"dev_root"`
	Debounce Duration   `toml:"debounce"`
	Lines    []GPIOLine `toml:"lines"`
}

type GPIOLine struct {
	Name      string `toml:"name"` // "ignition", "blue_lights", ...
	Chip      string `toml:"chip"` // "gpiochip0"
	Offset    int    `toml:"offset"`
	ActiveLow bool   `toml:"active_low"`
	Priority  string `toml:"priority"`
}

type Hooks struct {
	Socket     string   `toml:"socket"`
	AllowUIDs  []int    `toml:"allow_uids"`
	AllowGIDs  []int    `toml:"allow_gids"`
	EBPF       bool     `toml:"ebpf"`
	ExecAllow  []string `toml:"exec_allow"`
	LinkPeriod Duration `toml:"link_period"`
	// Event socket limits (firmware-hooks/eventsock).
	Rate        float64  `toml:"rate"`
	Burst       int      `toml:"burst"`
	MaxConns    int      `toml:"max_conns"`
	IdleTimeout Duration `toml:"idle_timeout"`
}

// Tracking is the position reporting policy (agent/tracking): a fix is
// reported when any of the triggers fires, but never more often than
// MinInterval unless an event forces it.
type Tracking struct {
	MinInterval Duration `toml:"min_interval"`
	MaxInterval Duration `toml:"max_interval"` // 0 = no heartbeat while moving
	Distance    float64  `toml:"distance"`     // metres; 0 disables
	Heading     float64  `toml:"heading"`      // degrees; 0 disables
	Speed       float64  `toml:"speed"`        // m/s change; 0 disables
	// StopSpeed is the speed below which the device counts as stopped:
	// heading changes are ignored (noise) and StopInterval replaces
	// MaxInterval.
	StopSpeed    float64  `toml:"stop_speed"`
	StopInterval Duration `toml:"stop_interval"` // 0 = same as max_interval
	// ForceEvents are the event types (kestrel.EventType names, or "all")
	// that make the next fix reported at once.
	ForceEvents []string `toml:"force_events"`
	// EmergencyWindow: after an emergency event every fix is reported in
	// full precision, privacy notwithstanding, for this long.
	EmergencyWindow Duration `toml:"emergency_window"`
}

// Privacy reduces or pauses location reporting, for example off duty.
type Privacy struct {
	Mode   string  `toml:"mode"`    // "off", "pause", "coarse": the mode at start
	OnMode string  `toml:"on_mode"` // what the "privacy on" command selects: "pause" or "coarse"
	Grid   float64 `toml:"grid"`    // metres, for "coarse"
	// Locked, set at fleet scope (or locally), stops group and device
	// configs from weakening privacy (agent/fleetctl).
	Locked bool `toml:"locked"`
	// Off-duty triggers (agent/tracking): each turns privacy.on_mode on
	// while it holds, without a person. The strictest of the command or
	// mode, the triggers and the zones applies (docs/privacy.md).
	Docked   bool   `toml:"docked"`    // while the camera is docked (firmware event)
	GPIOLine string `toml:"gpio_line"` // while this gpio.lines input is active; "" none
	// Schedule is a weekly off-duty schedule ("Mon-Fri 18:00-08:00", the
	// grammar of agent/config/offduty) in TimeZone (IANA name).
	Schedule []string      `toml:"schedule"`
	TimeZone string        `toml:"time_zone"`
	Zones    []PrivacyZone `toml:"zones"`
}

// PrivacyZone is a polygon (such as a home address or a hospital) in which
// positions are dropped or coarsened.
type PrivacyZone struct {
	Name    string      `toml:"name"`
	Action  string      `toml:"action"`  // "drop" or "coarse"
	Polygon [][]float64 `toml:"polygon"` // [[lat, lon], ...], WGS 84 degrees
}

type Remote struct {
	TrustedKeys   []string `toml:"trusted_keys"` // base64 Ed25519 public keys
	RollbackAfter Duration `toml:"rollback_after"`
	RequireSigned bool     `toml:"require_signed"`
	// StateFile keeps the applied remote config, the version high-water
	// mark, replay state and the audit log.
	StateFile     string   `toml:"state_file"`
	CommandMaxAge Duration `toml:"command_max_age"`
	AuditMax      int      `toml:"audit_max"`
	// MaxMessage bounds an inbound MQTT message; larger ones are
	// discarded as they are read, before anything is copied.
	MaxMessage int `toml:"max_message"`
	// ConfigThreshold and CommandThreshold: how many distinct trusted
	// keys with the role must sign a remote config or a command (N of the
	// M keys in trusted_keys with that role).
	ConfigThreshold  int `toml:"config_threshold"`
	CommandThreshold int `toml:"command_threshold"`
	// ReleaseThreshold: how many distinct trusted keys with the release
	// role must sign a release manifest (docs/ota.md).
	ReleaseThreshold int `toml:"release_threshold"`
}

// Update is the over-the-air updater (agent/update, docs/ota.md).
type Update struct {
	// Enabled: follow the fleet's release manifests.
	Enabled bool `toml:"enabled"`
	// Dir holds the slots, the current link and update.json; empty is
	// the directory of remote.state_file.
	Dir string `toml:"dir"`
	// HealthTimeout: a new release must pass its health gate (broker
	// reached, GPS sentences if fitted, spool open) within this long.
	HealthTimeout Duration `toml:"health_timeout"`
	// Rate caps the download in bytes per second; 0 takes the link
	// profile's (lte 256 KiB/s, narrowband 1 KiB/s).
	Rate int `toml:"rate"`
}

type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Duration is a time.Duration written as a Go duration string ("1s").
type Duration struct{ time.Duration }

// D makes a Duration.
func D(d time.Duration) Duration { return Duration{d} }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults returns the built-in configuration. It is what DefaultsTOML
// prints; device.id and device.fleet are empty and must be set.
func Defaults() Config {
	return Config{
		Broker: Broker{
			URLs:              []string{"tls://localhost:8883"},
			RequireClientCert: true,
			Profile:           "lte",
			BatchMax:          50,
			InFlight:          20,
		},
		Spool: Spool{
			Dir:          "/var/lib/kestrel/spool",
			MaxBytes:     256 << 20,
			MaxAge:       D(7 * 24 * time.Hour),
			SyncInterval: D(time.Second),
		},
		GPS: GPS{Watchdog: D(5 * time.Second)},
		Radio: Radio{
			Profile:   "lte",
			Baud:      115200,
			Poll:      D(10 * time.Second),
			Heartbeat: D(time.Minute),
		},
		Sensors: Sensors{
			SysfsRoot:     "/sys",
			DevRoot:       "/dev",
			BatteryPeriod: D(time.Minute),
			ThermalPeriod: D(time.Minute),
		},
		Motion: Motion{
			Mounting:      "+x,+y,+z",
			HarshAccel:    3.5,
			HarshBrake:    4.0,
			HarshCorner:   4.0,
			HarshDuration: D(300 * time.Millisecond),
			Crash:         24.5,
			CrashHoldoff:  D(10 * time.Second),
			GravityTau:    D(10 * time.Second),
		},
		Power: Power{
			IgnitionLine:     "ignition",
			BatteryLow:       15,
			WakeHold:         D(5 * time.Minute),
			ReducedInterval:  D(5 * time.Minute),
			ReducedRadioPoll: D(time.Minute),
			LowPowerAfter:    D(30 * time.Minute),
			LowInterval:      D(time.Hour),
			LowRadioPoll:     D(5 * time.Minute),
		},
		GPIO: GPIO{DevRoot: "/dev", Debounce: D(20 * time.Millisecond)},
		Hooks: Hooks{
			Socket:      "/run/kestrel/events.sock",
			LinkPeriod:  D(time.Minute),
			Rate:        5,
			Burst:       20,
			MaxConns:    16,
			IdleTimeout: D(5 * time.Minute),
		},
		Status: Status{Socket: "/run/kestrel/control.sock"},
		Tracking: Tracking{
			MinInterval:     D(time.Second),
			MaxInterval:     D(time.Minute),
			Distance:        50,
			Heading:         15,
			Speed:           3,
			StopSpeed:       1,
			StopInterval:    D(5 * time.Minute),
			ForceEvents:     []string{"emergency", "recording_start", "recording_stop", "tamper", "holster", "taser", "input", "locate"},
			EmergencyWindow: D(10 * time.Minute),
		},
		Privacy:  Privacy{Mode: "off", OnMode: "pause", Grid: 1000, TimeZone: "UTC"},
		Evidence: Evidence{CheckpointRecords: 1000, CheckpointInterval: D(5 * time.Minute)},
		Remote: Remote{
			RollbackAfter:    D(2 * time.Minute),
			RequireSigned:    true,
			StateFile:        "/var/lib/kestrel/remote.json",
			CommandMaxAge:    D(5 * time.Minute),
			AuditMax:         256,
			MaxMessage:       64 << 10,
			ConfigThreshold:  1,
			CommandThreshold: 1,
			ReleaseThreshold: 1,
		},
		Update: Update{Enabled: true, HealthTimeout: D(2 * time.Minute)},
		Log:    Log{Level: "info", Format: "text"},
	}
}
