package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// leafField locates one settable key in Config.
type leafField struct {
	index []int
	typ   reflect.Type
}

var (
	leafFields = map[string]leafField{}
	leafPaths  []string // sorted
	durType    = reflect.TypeOf(Duration{})
)

func init() {
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			p := tag
			if prefix != "" {
				p = prefix + "." + tag
			}
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct && f.Type != durType {
				walk(f.Type, p, idx)
				continue
			}
			leafFields[p] = leafField{index: idx, typ: f.Type}
			leafPaths = append(leafPaths, p)
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	sort.Strings(leafPaths)
}

// Paths returns every key path, sorted.
func Paths() []string { return append([]string(nil), leafPaths...) }

// atRestart are keys whose change takes effect only when the agent next
// starts: identity (topics, spool contents and sequence numbers hang off
// it), where data lives, resources the agent acquires once with
// privileges, and the log format (the handler is built once). The spool's
// limits apply live, except a max_bytes too small for the segment size
// chosen at open: the agent then reports that change "applies at
// restart" (spool.ErrNeedsRestart). A change
// to one of them is accepted and reported "applies at restart"; the
// running value stays what it was until then.
var atRestart = map[string]string{
	"device.id":         "identity: topics, spool contents and sequence numbers hang off it",
	"device.fleet":      "identity: topics, spool contents and sequence numbers hang off it",
	"device.key_file":   "the device key is loaded once, at start",
	"spool.dir":         "the spool is opened once, at start",
	"spool.encrypt":     "the spool is opened once, at start",
	"spool.key_file":    "the spool key is loaded once, at start",
	"remote.state_file": "the remote state is loaded once, at start",
	"hooks.socket":      "the socket is created once, with privileges",
	"hooks.ebpf":        "eBPF programs are loaded once, with privileges",
	"log.format":        "the log handler is built once, at start",
	"status.socket":     "the local control socket is created once, at start",
}

// localOnly are keys that a remote config may not set: identity and paths
// (a fleet-wide config must never rename a device or point it at another
// directory), the local file names of secrets, and the two switches that
// would let a stolen fleet key lower the device's guard for the next
// attacker (accepting unsigned config, plaintext brokers, no client
// certificate).
var localOnly = map[string]bool{
	"device.id":                  true,
	"device.fleet":               true,
	"device.key_file":            true,
	"spool.dir":                  true,
	"spool.encrypt":              true,
	"spool.key_file":             true,
	"remote.state_file":          true,
	"remote.require_signed":      true,
	"broker.allow_plaintext":     true,
	"broker.require_client_cert": true,
	"broker.ca_file":             true,
	"broker.cert_file":           true,
	"broker.key_file":            true,
	"broker.password_file":       true,
	"hooks.socket":               true,
	"hooks.ebpf":                 true,
	"status.socket":              true,
	"sensors.sysfs_root":         true,
	"sensors.dev_root":           true,
	"gpio.dev_root":              true,
}

// LiveChangeable reports whether the key at path takes effect without a
// restart (SIGHUP or remote config). Unknown paths do not.
func LiveChangeable(path string) bool {
	_, ok := leafFields[path]
	_, restart := atRestart[path]
	return ok && !restart && path != "version"
}

// RemoteSettable reports whether a signed remote config may set the key.
func RemoteSettable(path string) bool {
	_, ok := leafFields[path]
	return ok && !localOnly[path] && path != "version"
}

// Applies says how a changed key takes effect.
type Applies int

const (
	// Live: the running part that owns the key applies it at once.
	Live Applies = iota
	// AtRestart: accepted, and in force from the next start; until then
	// the running value is unchanged.
	AtRestart
	// Refused: the key cannot change this way; the whole change is refused.
	Refused
)

func (a Applies) String() string {
	switch a {
	case Live:
		return "live"
	case AtRestart:
		return "restart"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// MarshalText writes the name used in reports ("live", "restart", "refused").
func (a Applies) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (a *Applies) UnmarshalText(b []byte) error {
	switch string(b) {
	case "live":
		*a = Live
	case "restart":
		*a = AtRestart
	case "refused":
		*a = Refused
	default:
		return fmt.Errorf("unknown applies %q", b)
	}
	return nil
}

// Change is one changed key, as Diff finds it.
type Change struct {
	Path    string  `json:"path"`    // dotted key path, "gps.baud"
	Section string  `json:"section"` // its table, "gps"
	Applies Applies `json:"applies"`
	// Reason says why a change is not live.
	Reason string `json:"reason,omitempty"`
}

func (c Change) String() string {
	if c.Applies == Live {
		return c.Path
	}
	return c.Path + " (" + c.Applies.String() + ")"
}

// Diff returns the keys whose values differ between old and new, sorted by
// path, each with how it applies. Lists compare by content (an empty list
// equals an absent one); gpio.lines is one key; the version is not a key.
func Diff(old, new Config) []Change {
	paths := ChangedPaths(old, new)
	out := make([]Change, 0, len(paths))
	for _, p := range paths {
		if p == "version" {
			continue
		}
		sec, _, _ := strings.Cut(p, ".")
		c := Change{Path: p, Section: sec, Applies: Live}
		if why, ok := atRestart[p]; ok {
			c.Applies, c.Reason = AtRestart, why
		}
		out = append(out, c)
	}
	return out
}

// CheckReload returns nil if every difference between old and new applies
// live, else one ErrNotLive FieldError per key that does not.
func CheckReload(old, new Config) error {
	var errs []error
	for _, c := range Diff(old, new) {
		if c.Applies != Live {
			errs = append(errs, &FieldError{Path: c.Path, Err: ErrNotLive})
		}
	}
	return errors.Join(errs...)
}

// ChangedPaths returns the sorted key paths whose values differ, the
// version included.
func ChangedPaths(old, new Config) []string {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(new)
	var out []string
	for _, p := range leafPaths {
		f := leafFields[p]
		a, b := ov.FieldByIndex(f.index), nv.FieldByIndex(f.index)
		if a.Kind() == reflect.Slice {
			if !sliceEqual(a, b) {
				out = append(out, p)
			}
			continue
		}
		if a.Kind() == reflect.Float64 && math.IsNaN(a.Float()) && math.IsNaN(b.Float()) {
			continue // NaN is invalid anyway; it must not look like a change
		}
		if !a.Equal(b) {
			out = append(out, p)
		}
	}
	return out
}

// CopyKey sets the key at path in dst to its value in src (a deep copy for
// lists). Unknown paths are an error.
func CopyKey(dst *Config, src Config, path string) error {
	f, ok := leafFields[path]
	if !ok {
		return &FieldError{Path: path, Err: ErrUnknownKey}
	}
	v := reflect.ValueOf(src).FieldByIndex(f.index)
	d := reflect.ValueOf(dst).Elem().FieldByIndex(f.index)
	if v.Kind() == reflect.Slice && !v.IsNil() {
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(n, v)
		v = n
	}
	d.Set(v)
	return nil
}

func sliceEqual(a, b reflect.Value) bool {
	if a.Len() != b.Len() {
		return false
	}
	for i := 0; i < a.Len(); i++ {
		if !reflect.DeepEqual(a.Index(i).Interface(), b.Index(i).Interface()) {
			return false
		}
	}
	return true
}

// Clone returns a deep copy: the TOML decoder writes into existing slice
// storage, so an overlay decoded onto a shallow copy would corrupt the
// original.
func Clone(c Config) Config {
	out := c
	v := reflect.ValueOf(&out).Elem()
	for _, p := range leafPaths {
		f := v.FieldByIndex(leafFields[p].index)
		if f.Kind() == reflect.Slice && !f.IsNil() {
			n := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(n, f)
			f.Set(n)
		}
	}
	return out
}

// ApplySet applies one "key=value" override (the --set syntax). Lists are
// comma-separated ("broker.urls=tls://a:8883,tls://b:8883"); an empty value
// empties a list. The result is not validated.
func ApplySet(c *Config, kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("%q: want key=value", kv)
	}
	f, found := leafFields[key]
	if !found {
		return &FieldError{Path: key, Err: ErrUnknownKey}
	}
	dst := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	if err := setString(dst, val); err != nil {
		return &FieldError{Path: key, Err: fmt.Errorf("%w: %v", ErrInvalidValue, err)}
	}
	return nil
}

// Get returns the value at path as --set would write it.
func Get(c Config, path string) (string, error) {
	f, ok := leafFields[path]
	if !ok {
		return "", &FieldError{Path: path, Err: ErrUnknownKey}
	}
	v := reflect.ValueOf(c).FieldByIndex(f.index)
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return strings.Join(parts, ","), nil
	}
	if v.Type() == durType {
		return v.Interface().(Duration).String(), nil
	}
	return fmt.Sprint(v.Interface()), nil
}

func setString(dst reflect.Value, s string) error {
	if dst.Type() == durType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		dst.Set(reflect.ValueOf(Duration{d}))
		return nil
	}
	switch dst.Kind() {
	case reflect.String:
		dst.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 0, dst.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		dst.SetInt(n)
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 0, dst.Type().Bits())
		if err != nil {
			return fmt.Errorf("want a non-negative integer, got %q", s)
		}
		dst.SetUint(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", s)
		}
		dst.SetFloat(x)
	case reflect.Slice:
		et := dst.Type().Elem()
		if et.Kind() != reflect.String && et.Kind() != reflect.Int {
			return errors.New("a list of tables cannot be set with --set; use the config file")
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		out := reflect.MakeSlice(dst.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setString(out.Index(i), p); err != nil {
				return fmt.Errorf("item %d: %w", i+1, err)
			}
		}
		dst.Set(out)
	default:
		return fmt.Errorf("cannot set %s", dst.Type())
	}
	return nil
}
