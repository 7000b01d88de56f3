// Package config holds the agent's configuration: the TOML file format,
// defaults, validation, --set overrides, and (see remote.go) signed remote
// configuration from the fleet manager.
package config

import "time"

// Config is the whole agent configuration. The TOML keys are the
// lowercase dotted paths used by --set (for example "gps.baud").
type Config struct {
	Version  uint64   `toml:"version"` // remote config version; grows only
	Device   Device   `toml:"device"`
	Broker   Broker   `toml:"broker"`
	Spool    Spool    `toml:"spool"`
	GPS      GPS      `toml:"gps"`
	Radio    Radio    `toml:"radio"`
	Sensors  Sensors  `toml:"sensors"`
	GPIO     GPIO     `toml:"gpio"`
	Hooks    Hooks    `toml:"hooks"`
	Tracking Tracking `toml:"tracking"`
	Privacy  Privacy  `toml:"privacy"`
	Remote   Remote   `toml:"remote"`
	Log      Log      `toml:"log"`
}

type Device struct {
	ID    string   `toml:"id"`
	Fleet string   `toml:"fleet"`
	Group []string `toml:"groups"`
}

type Broker struct {
	URLs           []string `toml:"urls"`
	AllowPlaintext bool     `toml:"allow_plaintext"`
	CAFile         string   `toml:"ca_file"`
	CertFile       string   `toml:"cert_file"`
	KeyFile        string   `toml:"key_file"`
	Username       string   `toml:"username"`
	PasswordFile   string   `toml:"password_file"`
	KeepAlive      Duration `toml:"keepalive"`
	BatchMax       int      `toml:"batch_max"`
	BatchAge       Duration `toml:"batch_age"`
	InFlight       int      `toml:"inflight"`
	RateLimit      int      `toml:"rate_limit"` // bytes per second, 0 = unlimited
}

type Spool struct {
	Dir          string   `toml:"dir"`
	MaxBytes     int64    `toml:"max_bytes"`
	MaxAge       Duration `toml:"max_age"`
	SyncInterval Duration `toml:"sync_interval"`
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
}

type Sensors struct {
	SysfsRoot     string   `toml:"sysfs_root"`
	AccelRate     float64  `toml:"accel_rate"` // Hz; 0 disables
	BatteryPeriod Duration `toml:"battery_period"`
	ThermalPeriod Duration `toml:"thermal_period"`
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
}

type Tracking struct {
	MinInterval Duration `toml:"min_interval"`
	MaxInterval Duration `toml:"max_interval"`
	Distance    float64  `toml:"distance"` // metres
	Heading     float64  `toml:"heading"`  // degrees
	Speed       float64  `toml:"speed"`    // m/s change
}

type Privacy struct {
	Mode string  `toml:"mode"` // "off", "pause", "coarse"
	Grid float64 `toml:"grid"` // metres, for "coarse"
}

type Remote struct {
	TrustedKeys   []string `toml:"trusted_keys"` // base64 Ed25519 public keys
	RollbackAfter Duration `toml:"rollback_after"`
	RequireSigned bool     `toml:"require_signed"`
}

type Log struct {
	Level string `toml:"level"`
}

// Duration is a time.Duration written as a Go duration string ("1s").
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }
