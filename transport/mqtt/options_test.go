package mqtt

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

func TestNewValidates(t *testing.T) {
	out := broker.NewOutbox()
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string // substring of the error; "" = valid
	}{
		{"valid loopback plaintext", func(o *Options) {}, ""},
		{"localhost plaintext", func(o *Options) { o.URLs = []string{"mqtt://localhost"} }, ""},
		{"ipv6 loopback", func(o *Options) { o.URLs = []string{"tcp://[::1]:1883"} }, ""},
		{"tls anywhere", func(o *Options) { o.URLs = []string{"tls://broker.example.net"} }, ""},
		{"no urls", func(o *Options) { o.URLs = nil }, "no broker URL"},
		{"plaintext remote", func(o *Options) { o.URLs = []string{"tcp://198.51.100.7:1883"} }, "non-loopback"},
		{"plaintext remote by name", func(o *Options) { o.URLs = []string{"tcp://broker.example.net"} }, "non-loopback"},
		{"plaintext remote allowed", func(o *Options) {
			o.URLs = []string{"tcp://198.51.100.7:1883"}
			o.AllowPlaintext = true
		}, ""},
		{"bad scheme", func(o *Options) { o.URLs = []string{"http://127.0.0.1"} }, "scheme"},
		{"no host", func(o *Options) { o.URLs = []string{"tls://:8883"} }, "no host"},
		{"no fleet", func(o *Options) { o.Fleet = "" }, "fleet is empty"},
		{"wildcard device", func(o *Options) { o.Device = "a/+" }, "device"},
		{"negative keepalive", func(o *Options) { o.KeepAlive = -time.Second }, "keepalive"},
		{"sub-second keepalive", func(o *Options) { o.KeepAlive = 500 * time.Millisecond }, "keepalive"},
		{"backoff inverted", func(o *Options) { o.BackoffMin, o.BackoffMax = time.Minute, time.Second }, "backoff"},
		{"batch over wire limit", func(o *Options) { o.BatchMax = 20000 }, "wire limit"},
		{"negative rate", func(o *Options) { o.RateLimit = -1 }, "rate limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions("tcp://127.0.0.1:1883")
			tc.mod(&o)
			s, err := New(o, out)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error %v, want one containing %q", err, tc.want)
			}
			if s != nil {
				t.Error("session returned with an error")
			}
		})
	}
	if _, err := New(testOptions("tcp://10.0.0.1"), out); !errors.Is(err, ErrPlaintext) {
		t.Errorf("plaintext error %v does not wrap ErrPlaintext", err)
	}
	if _, err := New(testOptions("tcp://127.0.0.1"), nil); err == nil {
		t.Error("nil outbox accepted")
	}
}

func TestNormalizeDefaultsAndTLSFloor(t *testing.T) {
	o := Options{URLs: []string{"tls://b.example.net"}, Fleet: "f", Device: "d", TLS: &tls.Config{MinVersion: tls.VersionTLS10}}
	bs, err := o.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if bs[0].URL != "tls://b.example.net:8883" || bs[0].Insecure() {
		t.Errorf("broker %+v", bs[0])
	}
	if o.TLS.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS minimum %x, want TLS 1.2", o.TLS.MinVersion)
	}
	if o.ClientID != "kestrel-f-d" || o.BatchMax != defaultBatchMax || o.InFlight != defaultInFlight || o.KeepAlive != ProfileLTE.KeepAlive || o.BatchAge != ProfileLTE.NormalAge {
		t.Errorf("defaults not applied: %+v", o)
	}
	narrow := Options{URLs: []string{"tls://b"}, Fleet: "f", Device: "d", RateLimit: 300}
	if _, err := narrow.normalize(); err != nil || narrow.BatchBytes != 1500 {
		t.Errorf("at 300 B/s batch bytes %d, want 5 s of link (1500): %v", narrow.BatchBytes, err)
	}
	o2 := Options{URLs: []string{"tcp://203.0.113.9"}, Fleet: "f", Device: "d", AllowPlaintext: true}
	bs, err = o2.normalize()
	if err != nil || !bs[0].Insecure() || bs[0].URL != "tcp://203.0.113.9:1883" {
		t.Errorf("allowed plaintext: %+v, %v", bs, err)
	}
}

func TestLoadTLS(t *testing.T) {
	ca := broker.NewCA(t)
	cfg, err := LoadTLS(ca.CAFile, ca.ClientCert, ca.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion < tls.VersionTLS12 || len(cfg.Certificates) != 1 || cfg.RootCAs == nil {
		t.Errorf("config %+v", cfg)
	}
	if _, err := LoadTLS(ca.ClientKey, ca.ClientCert, ca.ClientKey); err == nil {
		t.Error("a key file accepted as CA")
	}
	if _, err := LoadTLS(ca.CAFile, ca.ClientCert, ca.ServerKey); err == nil {
		t.Error("mismatched certificate and key accepted")
	}
	if _, err := LoadTLS(ca.Dir+"/missing.pem", ca.ClientCert, ca.ClientKey); err == nil {
		t.Error("missing CA file accepted")
	}
	// broker.ca_file empty: the system roots (RootCAs nil), as the
	// config template says.
	sys, err := LoadTLS("", ca.ClientCert, ca.ClientKey)
	if err != nil || sys.RootCAs != nil || len(sys.Certificates) != 1 {
		t.Errorf("empty CA: %v, %+v", err, sys)
	}
	if c, err := LoadTLS(ca.CAFile, "", ""); err != nil || len(c.Certificates) != 0 || c.RootCAs == nil {
		t.Errorf("CA without a client certificate: %v", err)
	}
	if _, err := LoadTLS(ca.CAFile, ca.ClientCert, ""); err == nil {
		t.Error("a certificate without its key accepted")
	}
}

// TestURLCredentialsRefused: paho would log in with a user:pass@ in the
// URL while the session logs and reports the URL, and the session used to
// drop them silently; now New refuses the URL, naming the config keys, and
// the error shows no password.
func TestURLCredentialsRefused(t *testing.T) {
	out := broker.NewOutbox()
	for _, raw := range []string{"tls://kestrel:s3cret-pw@b.example.net:8883", "tcp://kestrel:s3cret-pw@127.0.0.1:1883", "tls://kestrel@b.example.net"} {
		_, err := New(testOptions(raw), out)
		if !errors.Is(err, ErrURLCredentials) {
			t.Errorf("%s: %v, want ErrURLCredentials", RedactURL(raw), err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "broker.password_file") {
			t.Errorf("error %q shows the password or does not point at broker.password_file", err)
		}
	}
	if got := RedactURL("tls://kestrel:s3cret-pw@[::1"); strings.Contains(got, "s3cret-pw") {
		t.Errorf("RedactURL of an unparseable URL = %q", got)
	}
	if got := RedactURL("tls://kestrel:s3cret-pw@b.example.net:8883"); got != "tls://kestrel:xxxxx@b.example.net:8883" {
		t.Errorf("RedactURL = %q", got)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	var ceilings []time.Duration
	b.rand = func(n int64) int64 { ceilings = append(ceilings, time.Duration(n)); return n - 1 }
	for range 6 {
		if d := b.next(); d < 0 || d >= ceilings[len(ceilings)-1] {
			t.Fatalf("delay %v outside [0, %v)", d, ceilings[len(ceilings)-1])
		}
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if ceilings[i] != want[i]*time.Millisecond {
			t.Fatalf("ceilings %v, want %v ms", ceilings, want)
		}
	}
	b.reset()
	b.next()
	if ceilings[len(ceilings)-1] != 100*time.Millisecond {
		t.Errorf("after reset ceiling %v", ceilings[len(ceilings)-1])
	}
	// Real randomness spreads over the whole interval, down to zero.
	b = newBackoff(time.Second, time.Second)
	var lo, hi int
	for range 1000 {
		d := b.next()
		if d < 250*time.Millisecond {
			lo++
		}
		if d > 750*time.Millisecond {
			hi++
		}
	}
	if lo < 150 || hi < 150 {
		t.Errorf("delays not spread over [0,1s): %d under 250ms, %d over 750ms of 1000", lo, hi)
	}
}

func TestStateMessage(t *testing.T) {
	p, err := stateMessage(true, 9, 3, "1.2.3", true, 1700000000000, map[string]any{
		"config_version": uint64(4),
		"capabilities":   []string{"gps", "ebpf"},
		"online":         false, // must not override the core field
		"spool":          map[string]any{"records": 12},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeState(p)
	if err != nil {
		t.Fatal(err)
	}
	if m["online"] != true || toU64(m["boot"]) != 9 || toU64(m["bdseq"]) != 3 || m["version"] != "1.2.3" || m["plaintext"] != true {
		t.Errorf("core fields: %v", m)
	}
	if toU64(m["config_version"]) != 4 || m["capabilities"] == nil || m["spool"] == nil {
		t.Errorf("extra fields: %v", m)
	}
	if _, err := DecodeState(p[:len(p)-1]); err == nil {
		t.Error("truncated state decoded")
	}
	if _, err := DecodeState([]byte{0x91, 0x01}); err == nil {
		t.Error("an array decoded as a state map")
	}
}

func FuzzDecodeState(f *testing.F) {
	p, _ := stateMessage(false, 1, 2, "v", false, 3, map[string]any{"x": "y"})
	f.Add(p)
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeState(b)
	})
}

func TestPacer(t *testing.T) {
	p := &pacer{rate: 1000}
	now := time.Unix(100, 0)
	if w := p.wait(now); w != 0 {
		t.Fatalf("idle pacer waits %v", w)
	}
	p.spend(now, 500)
	if w := p.wait(now); w != 500*time.Millisecond {
		t.Errorf("after 500 B at 1000 B/s wait %v, want 500ms", w)
	}
	p.spend(now, 500) // an event: booked, not waited for
	if w := p.wait(now.Add(200 * time.Millisecond)); w != 800*time.Millisecond {
		t.Errorf("wait %v, want 800ms", w)
	}
	var none *pacer
	if none.wait(now) != 0 {
		t.Error("nil pacer waits")
	}
}
