package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed defaults.toml
var defaultsTOML []byte

// DefaultsTOML returns a complete, commented config file holding the
// defaults: what `kestrel config defaults` prints.
func DefaultsTOML() []byte { return append([]byte(nil), defaultsTOML...) }

// MaxFileSize bounds a config file or remote config body. A real config is a
// few KiB; the bound keeps a hostile or corrupt input from costing memory.
const MaxFileSize = 64 << 10

// FieldError is an error about one key, named by its dotted path
// ("gps.baud", "gpio.lines[1].chip"). Path is empty for errors about the
// document as a whole (TOML syntax).
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Sentinel errors wrapped by FieldError, for callers that branch.
var (
	ErrUnknownKey   = errors.New("unknown key")
	ErrNotLive      = errors.New("cannot change without a restart")
	ErrRefused      = errors.New("change refused")
	ErrNotRemote    = errors.New("can only be set in the local config file")
	ErrTooLarge     = errors.New("config too large")
	ErrInvalidValue = errors.New("invalid value")
)

func fieldErr(path string, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// FieldErrors flattens an error (possibly an errors.Join tree) into its
// FieldErrors; other errors become FieldErrors with an empty path.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		// A wrapped error ("all version 4: ...") may hold several field
		// errors joined: list each, not only the first errors.As finds.
		if u := errors.Unwrap(e); u != nil {
			if inner := FieldErrors(u); len(inner) > 1 || inner[0].Path != "" {
				out = append(out, inner...)
				return
			}
		}
		out = append(out, &FieldError{Err: e})
	}
	walk(err)
	return out
}

// Parse decodes a config file strictly on top of Defaults(): unknown keys
// and values of the wrong type are errors naming the key path. It does not
// call Validate (so that a template with empty required keys parses); Load
// does.
func Parse(data []byte) (Config, error) {
	c := Defaults()
	if _, err := decodeInto(&c, data); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Load reads the file at path (none if path is empty: defaults only), applies
// the --set overrides in order, and validates the result. Every error names
// its key path; several are joined with errors.Join.
func Load(path string, sets []string) (Config, error) {
	c := Defaults()
	if path != "" {
		data, err := readLimited(path)
		if err != nil {
			return Config{}, err
		}
		if _, err := decodeInto(&c, data); err != nil {
			return Config{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	var errs []error
	for _, kv := range sets {
		if err := ApplySet(&c, kv); err != nil {
			errs = append(errs, fmt.Errorf("--set %w", err))
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config %s: %w: over %d bytes", path, ErrTooLarge, MaxFileSize)
	}
	return data, nil
}

// Overlay decodes a partial config (a fleet manager's remote config) strictly
// on top of a copy of base and returns the result with the dotted paths of
// the keys the overlay set. Keys that only the local file may set are
// rejected with ErrNotRemote. The result is not validated.
func Overlay(base Config, data []byte) (Config, []string, error) {
	if len(data) > MaxFileSize {
		return Config{}, nil, &FieldError{Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxFileSize)}
	}
	c := Clone(base)
	md, err := decodeInto(&c, data)
	if err != nil {
		return Config{}, nil, err
	}
	var keys []string
	var errs []error
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		p := leafPath(k)
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		keys = append(keys, p)
		if !RemoteSettable(p) {
			errs = append(errs, &FieldError{Path: p, Err: ErrNotRemote})
		}
	}
	sort.Strings(keys)
	if len(errs) > 0 {
		return Config{}, keys, errors.Join(errs...)
	}
	return c, keys, nil
}

// leafPath maps a TOML key to the config path it sets: keys inside arrays
// of tables (gpio.lines) map to the array, tables themselves to nothing.
func leafPath(k toml.Key) string {
	if len(k) == 0 {
		return ""
	}
	p := strings.Join(k, ".")
	if strings.HasPrefix(p, "gpio.lines") {
		return "gpio.lines"
	}
	if _, ok := leafFields[p]; ok {
		return p
	}
	return ""
}

var lastKeyRE = regexp.MustCompile(`last key "([^"]*)"`)

// decodeInto decodes TOML into c strictly and turns the decoder's errors
// into FieldErrors naming the key path. It decodes key by key (through
// toml.Primitive), so that every bad value is reported, not only the first.
func decodeInto(c *Config, data []byte) (toml.MetaData, error) {
	if len(data) > MaxFileSize {
		return toml.MetaData{}, &FieldError{Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxFileSize)}
	}
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return md, decodeErr("", err) // syntax
	}
	var errs []error
	var reported []string
	decodeTable(&md, top, reflect.ValueOf(c).Elem(), "", &errs, &reported)
	for _, k := range md.Undecoded() {
		p := cleanPath(k.String())
		if p == "" || under(p, reported) || slices.Contains(reported, p) {
			continue // an unknown table's keys add nothing to its own error
		}
		reported = append(reported, p)
		errs = append(errs, &FieldError{Path: p, Err: ErrUnknownKey})
	}
	return md, errors.Join(errs...)
}

// decodeTable decodes the keys of one TOML table into the struct rv.
func decodeTable(md *toml.MetaData, tbl map[string]toml.Primitive, rv reflect.Value, prefix string, errs *[]error, reported *[]string) {
	keys := make([]string, 0, len(tbl))
	for k := range tbl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		f, ok := fieldByTag(rv, k)
		if !ok {
			*reported = append(*reported, path)
			*errs = append(*errs, &FieldError{Path: path, Err: ErrUnknownKey})
			continue
		}
		if f.Kind() == reflect.Struct && f.Type() != durType {
			var sub map[string]toml.Primitive
			if err := md.PrimitiveDecode(tbl[k], &sub); err != nil {
				*reported = append(*reported, path)
				*errs = append(*errs, decodeErr(path, err))
				continue
			}
			decodeTable(md, sub, f, path, errs, reported)
			continue
		}
		if err := md.PrimitiveDecode(tbl[k], f.Addr().Interface()); err != nil {
			*errs = append(*errs, decodeErr(path, err))
		}
	}
}

func fieldByTag(rv reflect.Value, key string) (reflect.Value, bool) {
	t := rv.Type()
	for i := 0; i < t.NumField(); i++ {
		if strings.Split(t.Field(i).Tag.Get("toml"), ",")[0] == key {
			return rv.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// decodeErr turns a decoder error into a FieldError at path (or at the
// key the decoder names).
func decodeErr(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Position.Line > 0 {
			msg = fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)
		}
		if path == "" {
			path = cleanPath(pe.LastKey)
		}
		return &FieldError{Path: path, Err: fmt.Errorf("%w: %s", ErrInvalidValue, msg)}
	}
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	if m := lastKeyRE.FindStringSubmatch(err.Error()); m != nil {
		if path == "" {
			path = cleanPath(m[1])
		}
		if i := strings.Index(msg, "): "); i >= 0 {
			line := ""
			if strings.HasPrefix(msg, "line ") {
				line = msg[:strings.Index(msg, " (")] + ": "
			}
			msg = line + msg[i+3:]
		}
	}
	return &FieldError{Path: path, Err: fmt.Errorf("%w: %s", ErrInvalidValue, msg)}
}

// cleanPath drops TOML quoting from a key path for display.
func cleanPath(p string) string { return strings.ReplaceAll(p, `"`, "") }

func under(p string, parents []string) bool {
	for _, q := range parents {
		if strings.HasPrefix(p, q+".") {
			return true
		}
	}
	return false
}
