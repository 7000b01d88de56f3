package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// good is a minimal valid file: only the required keys.
const good = `
[device]
id = "cam-0042"
fleet = "met"
`

func TestDefaultsTOMLIsCompleteAndMatchesDefaults(t *testing.T) {
	c, err := Parse(DefaultsTOML())
	if err != nil {
		t.Fatalf("parse defaults: %v", err)
	}
	if d := ChangedPaths(Defaults(), c); len(d) != 0 {
		t.Fatalf("DefaultsTOML differs from Defaults() at %v", d)
	}
	// Every key appears in the template, so a fitter sees all of them.
	text := string(DefaultsTOML())
	for _, p := range Paths() {
		if p == "version" {
			continue
		}
		leaf := p[strings.LastIndex(p, ".")+1:]
		if !strings.Contains(text, "\n"+leaf+" = ") {
			t.Errorf("key %s missing from DefaultsTOML", p)
		}
	}
	// With the required keys set, the defaults validate.
	c.Device.ID, c.Device.Fleet = "d1", "f1"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults with id set do not validate: %v", err)
	}
	if err := Defaults().Validate(); err == nil || !hasPath(err, "device.id") || !hasPath(err, "device.fleet") {
		t.Fatalf("empty device.id/fleet not reported: %v", err)
	}
}

func hasPath(err error, path string) bool {
	for _, fe := range FieldErrors(err) {
		if fe.Path == path {
			return true
		}
	}
	return false
}

func TestParseStrictNamesKeyPath(t *testing.T) {
	cases := []struct {
		name, doc, path string
		sentinel        error
	}{
		{"unknown key", good + "[gps]\nbuad = 9600\n", "gps.buad", ErrUnknownKey},
		{"unknown table", good + "[gsp]\nbaud = 9600\n", "gsp", ErrUnknownKey},
		{"unknown line key", good + "[[gpio.lines]]\nname = \"ign\"\nchip = \"gpiochip0\"\npin = 3\n", "gpio.lines.pin", ErrUnknownKey},
		{"wrong type", good + "[gps]\nbaud = \"fast\"\n", "gps.baud", ErrInvalidValue},
		{"bad duration", good + "[spool]\nsync_interval = \"soon\"\n", "spool.sync_interval", ErrInvalidValue},
		{"int overflow", good + "[broker]\nbatch_max = 99999999999999999999\n", "broker.batch_max", ErrInvalidValue},
		{"list wanted", good + "[broker]\nurls = \"tls://a:1\"\n", "broker.urls", ErrInvalidValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("error %v is not %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name %s", err, tc.path)
			}
			t.Logf("%v", err)
		})
	}
	// Every bad value and unknown key at once, not only the first.
	_, err := Parse([]byte(good + "[gps]\nbaud = \"fast\"\nport = 3\n[radio]\npoll = \"often\"\nprofil = \"lte\"\n[tracking]\nforce_events = \"all\"\n"))
	for _, p := range []string{"gps.baud", "gps.port", "radio.poll", "radio.profil", "tracking.force_events"} {
		if !hasPath(err, p) {
			t.Errorf("no error for %s in: %v", p, err)
		}
	}
	if _, err := Parse([]byte("[device\nid=1")); err == nil {
		t.Fatal("syntax error accepted")
	}
}

func TestValidateNamesEveryBadKey(t *testing.T) {
	c, err := Parse([]byte(good + `
[broker]
urls = ["tcp://broker.example.org:1883", "tls://:8883", "ftp://x:1"]
inflight = 0
[gps]
baud = 9601
[radio]
profile = "gsm"
[[gpio.lines]]
name = "ignition"
chip = ""
offset = -1
priority = "urgent"
[tracking]
min_interval = "10s"
max_interval = "5s"
heading = 270.0
force_events = ["emergency", "explosion"]
[privacy]
mode = "blur"
[remote]
trusted_keys = ["bm90IGEga2V5"]
[log]
level = "verbose"
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	want := []string{
		"broker.urls[0]", "broker.urls[1]", "broker.urls[2]", "broker.inflight", "gps.baud",
		"radio.profile", "gpio.lines[0].chip", "gpio.lines[0].offset", "gpio.lines[0].priority",
		"tracking.max_interval", "tracking.heading", "tracking.force_events[1]", "privacy.mode",
		"remote.trusted_keys[0]", "log.level",
	}
	for _, p := range want {
		if !hasPath(err, p) {
			t.Errorf("no error for %s", p)
		}
	}
	if n := len(FieldErrors(err)); n != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", n, len(want), err)
	}
	if !errors.Is(err, ErrPlaintext) {
		t.Errorf("plaintext to a remote host not flagged as ErrPlaintext: %v", err)
	}
}

func TestPlaintextRules(t *testing.T) {
	for _, tc := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"tls://broker.example.org:8883", false, true},
		{"tcp://127.0.0.1:1883", false, true},
		{"tcp://localhost:1883", false, true},
		{"tcp://[::1]:1883", false, true},
		{"tcp://10.1.2.3:1883", false, false},
		{"tcp://10.1.2.3:1883", true, true},
		{"mqtt://broker.example.org:1883", false, false},
		{"tls://broker.example.org", false, true}, // 8883, as the session dials it
		{"tls://broker.example.org:0", false, false},
		{"tls://broker.example.org:65536", false, false},
		{"tls://kestrel:s3cret@broker.example.org:8883", false, false},
		{"tls://kestrel@broker.example.org:8883", false, false},
		{"wss://broker.example.org:443/mqtt", false, false}, // the session does not dial websockets
		{"ws://127.0.0.1:8080", false, false},
	} {
		err := CheckBrokerURL(tc.url, tc.allow)
		if (err == nil) != tc.ok {
			t.Errorf("CheckBrokerURL(%q, %v) = %v, want ok=%v", tc.url, tc.allow, err, tc.ok)
		}
	}
}

func TestApplySetDesignKeys(t *testing.T) {
	c := Defaults()
	sets := []string{
		"device.id=cam-7", "device.fleet=met", "broker.urls=tls://a.example:8883, tls://b.example:8883",
		"spool.dir=/data/spool", "gps.port=/dev/ttyS1", "gps.baud=9600", "radio.port=/dev/ttyUSB2",
		"radio.profile=tetra", "log.level=debug", "broker.allow_plaintext=true",
		"broker.require_client_cert=false", "tracking.min_interval=2s", "privacy.grid=250", "hooks.allow_uids=0,1000", "device.groups=",
	}
	for _, s := range sets {
		if err := ApplySet(&c, s); err != nil {
			t.Fatalf("ApplySet(%q): %v", s, err)
		}
	}
	if c.Device.ID != "cam-7" || c.Device.Fleet != "met" || c.Spool.Dir != "/data/spool" ||
		c.GPS.Port != "/dev/ttyS1" || c.GPS.Baud != 9600 || c.Radio.Port != "/dev/ttyUSB2" ||
		c.Radio.Profile != "tetra" || c.Log.Level != "debug" || !c.Broker.AllowPlaintext || c.Broker.RequireClientCert ||
		c.Tracking.MinInterval.Duration != 2*time.Second || c.Privacy.Grid != 250 ||
		!reflect.DeepEqual(c.Hooks.AllowUIDs, []int{0, 1000}) || len(c.Device.Group) != 0 {
		t.Fatalf("overrides not applied: %+v", c)
	}
	if !reflect.DeepEqual(c.Broker.URLs, []string{"tls://a.example:8883", "tls://b.example:8883"}) {
		t.Fatalf("broker.urls = %q", c.Broker.URLs)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("overridden config invalid: %v", err)
	}
	for _, bad := range []struct{ kv, path string }{
		{"gps.bud=9600", "gps.bud"}, {"gps.baud=fast", "gps.baud"}, {"gpio.lines=x", "gpio.lines"},
		{"broker.allow_plaintext=maybe", "broker.allow_plaintext"}, {"spool.max_age=forever", "spool.max_age"},
	} {
		err := ApplySet(&c, bad.kv)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != bad.path {
			t.Errorf("ApplySet(%q) = %v, want a FieldError at %s", bad.kv, err, bad.path)
		}
	}
	if err := ApplySet(&c, "no-equals"); err == nil {
		t.Error("ApplySet without '=' accepted")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kestrel.toml")
	if err := os.WriteFile(path, []byte(good+"[gps]\nport = \"/dev/ttyUSB0\"\nbaud = 4800\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, []string{"gps.baud=9600"})
	if err != nil {
		t.Fatal(err)
	}
	if c.GPS.Baud != 9600 || c.GPS.Port != "/dev/ttyUSB0" || c.Device.ID != "cam-0042" {
		t.Fatalf("Load: %+v", c.GPS)
	}
	// Errors from --set and validation each name their key.
	_, err = Load(path, []string{"gps.baud=9601", "radio.profile=gsm"})
	if !hasPath(err, "gps.baud") || !hasPath(err, "radio.profile") {
		t.Fatalf("Load errors: %v", err)
	}
	_, err = Load(path, []string{"nope.key=1"})
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "nope.key") {
		t.Fatalf("unknown --set key: %v", err)
	}
	// Oversized files are refused before parsing.
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte(good+"#"+strings.Repeat("x", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), nil); err == nil {
		t.Fatal("missing file accepted")
	}
	// No file: defaults plus --set.
	if _, err := Load("", []string{"device.id=a", "device.fleet=b"}); err != nil {
		t.Fatalf("Load without file: %v", err)
	}
}

func TestDiffAndCheckReload(t *testing.T) {
	old, _ := Parse([]byte(good))
	nu := Clone(old)
	nu.GPS.Baud = 9600
	nu.Broker.URLs[0] = "tls://other:8883"
	nu.Tracking.ForceEvents = nil
	if got := ChangedPaths(old, nu); !reflect.DeepEqual(got, []string{"broker.urls", "gps.baud", "tracking.force_events"}) {
		t.Fatalf("Diff = %v", got)
	}
	if old.Broker.URLs[0] != "tls://localhost:8883" {
		t.Fatal("Clone shares slice storage with the original")
	}
	if err := CheckReload(old, nu); err != nil {
		t.Fatalf("live changes rejected: %v", err)
	}
	nu.Device.ID = "other"
	nu.Spool.Dir = "/elsewhere"
	err := CheckReload(old, nu)
	if !errors.Is(err, ErrNotLive) || !hasPath(err, "device.id") || !hasPath(err, "spool.dir") {
		t.Fatalf("CheckReload: %v", err)
	}
	// An empty list equals an absent one.
	a, b := Defaults(), Defaults()
	b.Device.Group = []string{}
	if d := ChangedPaths(a, b); len(d) != 0 {
		t.Fatalf("nil vs empty differ: %v", d)
	}
}

func TestOverlay(t *testing.T) {
	base, _ := Parse([]byte(good + "[device]\n"[:0] + "[tracking]\ndistance = 10.0\n"))
	base.Device.Group = []string{"north"}
	out, keys, err := Overlay(base, []byte("[tracking]\nmax_interval = \"30s\"\n[device]\ngroups = [\"south\", \"cars\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(keys, []string{"device.groups", "tracking.max_interval"}) {
		t.Fatalf("keys = %v", keys)
	}
	if out.Tracking.MaxInterval.Duration != 30*time.Second || out.Tracking.Distance != 10 || out.Device.ID != "cam-0042" {
		t.Fatalf("overlay result wrong: %+v", out.Tracking)
	}
	if !reflect.DeepEqual(base.Device.Group, []string{"north"}) {
		t.Fatalf("overlay changed the base: %v", base.Device.Group)
	}
	_, _, err = Overlay(base, []byte("[device]\nid = \"evil\"\n[remote]\nrequire_signed = false\n"))
	if !errors.Is(err, ErrNotRemote) || !hasPath(err, "device.id") || !hasPath(err, "remote.require_signed") {
		t.Fatalf("local-only keys accepted remotely: %v", err)
	}
	_, _, err = Overlay(base, []byte("[gps]\nbuad = 1\n"))
	if !errors.Is(err, ErrUnknownKey) || !hasPath(err, "gps.buad") {
		t.Fatalf("unknown key in overlay: %v", err)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v", got, err)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := WriteAtomic(filepath.Join(dir, "no", "such", "dir"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestGetRoundTrip(t *testing.T) {
	c, _ := Parse([]byte(good))
	for _, p := range Paths() {
		if p == "gpio.lines" || p == "privacy.zones" { // lists of tables: file only
			continue
		}
		v, err := Get(c, p)
		if err != nil {
			t.Fatal(err)
		}
		d := Clone(c)
		if err := ApplySet(&d, p+"="+v); err != nil {
			t.Fatalf("ApplySet(%s=%s): %v", p, v, err)
		}
		if diff := ChangedPaths(c, d); len(diff) != 0 {
			t.Errorf("%s=%s round trip changed %v", p, v, diff)
		}
	}
}

// TestMutualTLSRequired: by default a broker that is not on loopback needs
// mutual TLS (a tls:// URL, a CA and a client certificate); the error names
// the missing keys and the switch. Loopback (a bridge on the device) is
// exempt, and broker.require_client_cert = false lifts it, in the local
// file only.
func TestMutualTLSRequired(t *testing.T) {
	base := Defaults()
	base.Device.ID, base.Device.Fleet = "cam-7", "met"
	if !base.Broker.RequireClientCert {
		t.Fatal("broker.require_client_cert is off by default")
	}
	for _, tc := range []struct {
		name  string
		set   func(*Broker)
		path  string // "" = valid
		words []string
	}{
		{"default loopback", func(b *Broker) {}, "", nil},
		{"plaintext loopback", func(b *Broker) { b.URLs = []string{"tcp://127.0.0.1:1883"} }, "", nil},
		{"tls without a client cert", func(b *Broker) { b.URLs = []string{"tls://mqtt.example:8883"}; b.CAFile = "/etc/kestrel/ca.pem" },
			"broker.cert_file", []string{"broker.cert_file, broker.key_file", "broker.require_client_cert = false", "tls://mqtt.example:8883"}},
		{"tls without anything", func(b *Broker) { b.URLs = []string{"tls://mqtt.example:8883"} },
			"broker.ca_file", []string{"broker.ca_file, broker.cert_file, broker.key_file"}},
		{"tls without a CA", func(b *Broker) {
			b.URLs = []string{"tls://mqtt.example:8883"}
			b.CertFile, b.KeyFile = "/etc/kestrel/c.pem", "/etc/kestrel/c.key"
		}, "broker.ca_file", []string{"set broker.ca_file,"}},
		{"mutual TLS", func(b *Broker) {
			b.URLs = []string{"tls://mqtt.example:8883", "tcp://localhost:1883"}
			b.CAFile, b.CertFile, b.KeyFile = "/etc/kestrel/ca.pem", "/etc/kestrel/c.pem", "/etc/kestrel/c.key"
		}, "", nil},
		{"plaintext allowed, but not without mTLS", func(b *Broker) {
			b.URLs = []string{"tcp://198.18.0.2:1883"}
			b.AllowPlaintext = true
			b.CAFile, b.CertFile, b.KeyFile = "/etc/kestrel/ca.pem", "/etc/kestrel/c.pem", "/etc/kestrel/c.key"
		}, "broker.urls[0]", []string{"plaintext", "broker.require_client_cert = false"}},
		{"waived", func(b *Broker) { b.URLs = []string{"tls://mqtt.example:8883"}; b.RequireClientCert = false }, "", nil},
		{"waived, plaintext", func(b *Broker) {
			b.URLs = []string{"tcp://198.18.0.2:1883"}
			b.AllowPlaintext, b.RequireClientCert = true, false
		}, "", nil},
	} {
		c := Clone(base)
		tc.set(&c.Broker)
		err := c.Validate()
		if tc.path == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !hasPath(err, tc.path) {
			t.Errorf("%s: %v, want an error at %s", tc.name, err, tc.path)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
	// A fleet push cannot lift it.
	if _, _, err := Overlay(base, []byte("[broker]\nrequire_client_cert = false\n")); !errors.Is(err, ErrNotRemote) {
		t.Fatalf("remote broker.require_client_cert accepted: %v", err)
	}
	m := Broker{URLs: []string{"tls://a:8883", "ssl://b:8883"}, CertFile: "c", KeyFile: "k"}
	if !m.MutualTLS() {
		t.Error("MutualTLS false for TLS URLs with a client certificate")
	}
	for _, b := range []Broker{{URLs: m.URLs}, {URLs: []string{"tls://a:8883", "tcp://127.0.0.1:1883"}, CertFile: "c", KeyFile: "k"}} {
		if b.MutualTLS() {
			t.Errorf("MutualTLS true for %+v", b)
		}
	}
}

// nullOutbox is an empty Outbox: enough for mqtt.New, which only checks
// the options.
type nullOutbox struct{}

func (nullOutbox) Take(dst []kestrel.Record, _ int) ([]kestrel.Record, error) { return dst, nil }
func (nullOutbox) Commit([]uint64) error                                      { return nil }
func (nullOutbox) Release([]uint64)                                           {}

// TestValidateRefusesWhatRunRefuses: `kestrel config validate` accepts a
// broker URL exactly when the session that `kestrel run` builds from it
// does (the reviewer found ws:// and wss:// passing validation and failing
// at run time).
func TestValidateRefusesWhatRunRefuses(t *testing.T) {
	for _, raw := range []string{
		"tls://broker.example.org:8883", "tls://broker.example.org", "ssl://broker.example.org:8883",
		"mqtts://broker.example.org:8883", "tcp://127.0.0.1:1883", "mqtt://localhost", "tcp://[::1]:1883",
		"tcp://198.18.0.2:1883", "ws://127.0.0.1:8080", "wss://broker.example.org:443/mqtt",
		"tls://kestrel:s3cret@broker.example.org:8883", "tls://kestrel@broker.example.org:8883",
		"tls://broker.example.org:0", "tls://broker.example.org:99999", "tls://:8883", "http://broker.example.org",
		"tls://broker.example.org:8883/x", "tls://broker.example.org:8883?a=b", "tls://[::1", "broker.example.org:8883",
	} {
		for _, allow := range []bool{false, true} {
			c := Defaults()
			c.Device.ID, c.Device.Fleet = "cam-7", "met"
			c.Broker.URLs, c.Broker.AllowPlaintext, c.Broker.RequireClientCert = []string{raw}, allow, false
			vErr := c.Validate()
			_, rErr := mqtt.New(mqtt.Options{URLs: []string{raw}, Fleet: "met", Device: "cam-7", AllowPlaintext: allow}, nullOutbox{})
			if (vErr == nil) != (rErr == nil) {
				t.Errorf("%q (allow_plaintext %v): validate says %v, the session says %v", raw, allow, vErr, rErr)
			}
		}
	}
}

// TestBrokerURLCredentialsRefused: a user or password in broker.urls is
// refused with a pointer to the keys that hold them, and the password
// never appears in the error.
func TestBrokerURLCredentialsRefused(t *testing.T) {
	c := Defaults()
	c.Device.ID, c.Device.Fleet = "cam-7", "met"
	c.Broker.URLs = []string{"tls://kestrel:s3cret-pw@broker.example.org:8883", "tls://kestrel:s3cret-pw@[::1"}
	err := c.Validate()
	if !errors.Is(err, ErrURLCredentials) && !hasPath(err, "broker.urls[0]") {
		t.Fatalf("credentials in a broker URL accepted: %v", err)
	}
	if !errors.Is(err, ErrURLCredentials) {
		t.Errorf("not ErrURLCredentials: %v", err)
	}
	for _, w := range []string{"broker.username", "broker.password_file", "broker.urls[0]", "broker.urls[1]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not name %s: %v", w, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("error shows the password: %v", err)
	}
}
