package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinylib/msgp/msgp"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/fleetctl"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// fleetRun runs a kestrelctl command in-process.
func fleetRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(args, stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

// fleetLink is a device's MQTT connection for these tests: a paho client
// that satisfies fleetctl.Messenger.
type fleetLink struct {
	cl           paho.Client
	fleet, devID string
	mu           sync.Mutex
	subs         map[string]func(string, []byte)
}

func (l *fleetLink) Publish(ctx context.Context, ch string, p []byte, retained bool) error {
	tok := l.cl.Publish("kestrel/v1/"+l.fleet+"/"+l.devID+"/"+ch, 1, retained, p)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *fleetLink) Subscribe(topic string, h func(string, []byte)) error {
	tok := l.cl.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) })
	if !tok.WaitTimeout(5 * time.Second) {
		return errors.New("subscribe timeout")
	}
	return tok.Error()
}

// fleetDoor stands in for the agent's door: it validates, runs apply
// (which may refuse) and keeps the running config.
type fleetDoor struct {
	mu    sync.Mutex
	run   config.Config
	apply func(context.Context, config.Config, config.Config) error
}

func (d *fleetDoor) Config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return config.Clone(d.run)
}

func (d *fleetDoor) Reload(ctx context.Context, next config.Config) ([]config.Change, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	changes := config.Diff(d.run, next)
	if d.apply != nil {
		if err := d.apply(ctx, d.run, next); err != nil {
			return changes, err
		}
	}
	d.run = next
	return changes, nil
}

// fleetDevice starts a device's remote manager on the broker, with a
// retained state message as the agent's session would publish.
func fleetDevice(t *testing.T, ca *broker.CA, url, id string, pub string, groups []string, apply func(context.Context, config.Config, config.Config) error, cmds map[string]fleetctl.CommandFunc) *fleetctl.Manager {
	t.Helper()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet, c.Device.Group = id, "met", groups
	c.Broker.URLs = []string{url}
	c.Spool.Dir = t.TempDir()
	c.Remote.StateFile = filepath.Join(t.TempDir(), "remote.json")
	c.Remote.TrustedKeys = []string{pub}
	o := paho.NewClientOptions().AddBroker(url).SetClientID("dev-" + id).SetCleanSession(true)
	if ca != nil {
		o.SetTLSConfig(ca.ClientTLS(t))
	}
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	policy := tracking.New(c.Tracking, c.Privacy)
	m, err := fleetctl.NewManager(fleetctl.Options{Current: c, Connected: cl.IsConnectionOpen, Commands: cmds, Privacy: policy, CheckEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := m.Attach(&fleetDoor{run: m.StartConfig(), apply: apply}, &fleetLink{cl: cl, fleet: "met", devID: id}); err != nil {
		t.Fatal(err)
	}
	st := stateMsg(true, map[string]any{"battery": 81, "battery_status": "Discharging", "spool_records": 1200, "spool_bytes": 90000,
		"spool_health": "ok", "radio_profile": "lte", "radio_registered": 1, "radio_rssi": -71, "gps": "fix", "config_version": 0})
	cl.Publish("kestrel/v1/met/"+id+"/state", 1, true, st).Wait()
	return m
}

// stateMsg is a state message in transport/mqtt's format (MessagePack map).
func stateMsg(online bool, extra map[string]any) []byte {
	b := msgp.AppendMapHeader(nil, uint32(2+len(extra)))
	b = msgp.AppendString(b, "online")
	b = msgp.AppendBool(b, online)
	b = msgp.AppendString(b, "time")
	b = msgp.AppendInt64(b, time.Now().UnixMilli())
	for k, v := range extra {
		b = msgp.AppendString(b, k)
		b, _ = msgp.AppendIntf(b, v)
	}
	return b
}

func TestKeygen(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "fleet")
	code, out, errOut := fleetRun(t, "keygen", "--out", prefix)
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, errOut)
	}
	keyPEM, err := os.ReadFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := fleet.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := os.ReadFile(prefix + ".pub")
	pub, err := config.ParsePublicKey(string(pubText))
	if err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("public key file does not match: %v", err)
	}
	if !strings.Contains(out, "key id "+fleet.KeyID(pub)) || !strings.Contains(out, "trusted_keys") {
		t.Fatalf("output: %s", out)
	}
	if fi, _ := os.Stat(prefix + ".key"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	// It never overwrites a key by accident.
	if code, _, _ := fleetRun(t, "keygen", "--out", prefix); code == 0 {
		t.Fatal("overwrote an existing key")
	}
}

// TestConfigPushTable pushes to a fleet through a mutual-TLS broker and
// checks the results table, then config get and status.
func TestConfigPushTable(t *testing.T) {
	ca := broker.NewCA(t)
	b := broker.StartMochi(t, broker.WithTLS(ca))
	tlsFlags := []string{"--ca", ca.CAFile, "--cert", ca.ClientCert, "--key", ca.ClientKey}
	dir := t.TempDir()
	prefix := filepath.Join(dir, "fleet")
	if code, _, e := fleetRun(t, "keygen", "--out", prefix); code != 0 {
		t.Fatal(e)
	}
	pubText, _ := os.ReadFile(prefix + ".pub")
	pub := strings.TrimSpace(string(pubText))

	var mu sync.Mutex
	running := map[string]config.Config{}
	applyFor := func(id string) func(context.Context, config.Config, config.Config) error {
		return func(_ context.Context, _, n config.Config) error {
			if id == "bwc-0003" && n.Version != 0 {
				return errors.New("gps: /dev/ttyS9: no such device")
			}
			mu.Lock()
			running[id] = n
			mu.Unlock()
			return nil
		}
	}
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("bwc-%04d", i)
		fleetDevice(t, ca, b.URL(), id, pub, []string{"north"}, applyFor(id), nil)
	}
	// A device known from its retained state that is switched off.
	p := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("ghost").SetTLSConfig(ca.ClientTLS(t)))
	p.Connect().Wait()
	p.Publish("kestrel/v1/met/bwc-0099/state", 1, true, stateMsg(false, map[string]any{"config_version": 3})).Wait()
	p.Disconnect(0)

	cfgFile := filepath.Join(dir, "patrol.toml")
	os.WriteFile(cfgFile, []byte("[tracking]\nmax_interval = \"20s\"\n"), 0o644)
	code, out, errOut := fleetRun(t, append(append([]string{"config", "push", "--broker", b.URL(), "--fleet", "met", "--all"}, tlsFlags...),
		"--sign-key", prefix+".key", "--version", "42", "--timeout", "3s", "--discover", "1s", cfgFile)...)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one rejected, one no answer)", code)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^DEVICE\s+RESULT\s+RUNNING\s+SIGNATURE\s+DETAIL`),
		regexp.MustCompile(`(?m)^bwc-0001\s+applied\s+42`),
		regexp.MustCompile(`(?m)^bwc-0002\s+applied\s+42`),
		regexp.MustCompile(`(?m)^bwc-0003\s+rejected\s+0\s+unsigned\s+gps: /dev/ttyS9: no such device`),
		regexp.MustCompile(`(?m)^bwc-0004\s+applied\s+42`),
		regexp.MustCompile(`(?m)^bwc-0099\s+no answer`),
		regexp.MustCompile(`applied 3, rejected 1, rolled back 0, no answer 1`),
	} {
		if !want.MatchString(out) {
			t.Errorf("table lacks %s", want)
		}
	}
	if !strings.Contains(errOut, "4/5") && !strings.Contains(errOut, "] 4/") {
		t.Errorf("no progress bar on stderr: %q", errOut)
	}
	mu.Lock()
	if running["bwc-0001"].Tracking.MaxInterval.Duration != 20*time.Second {
		t.Errorf("bwc-0001 runs %v", running["bwc-0001"].Tracking.MaxInterval)
	}
	mu.Unlock()

	// One device, all well: exit 0, and --watch ends.
	code, out, errOut = fleetRun(t, append(append([]string{"config", "push", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0002"}, tlsFlags...),
		"--sign-key", prefix+".key", "--version", "43", "--timeout", "5s", "--watch", "300ms", cfgFile)...)
	if code != 0 || !regexp.MustCompile(`(?m)^bwc-0002\s+applied\s+43`).MatchString(out) || strings.Contains(out, "bwc-0001") {
		t.Fatalf("push to one device: exit %d\n%s\n%s", code, out, errOut)
	}

	// A file every device would reject is refused before it is signed.
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[gps]\nbuad = 9600\n"), 0o644)
	code, _, errOut = fleetRun(t, "config", "push", "--broker", b.URL(), "--fleet", "met", "--group", "north", "--sign-key", prefix+".key", bad)
	if code != 1 || !strings.Contains(errOut, "gps.buad") {
		t.Fatalf("bad file: exit %d, %s", code, errOut)
	}

	// config get shows the desired config and the reports.
	code, out, errOut = fleetRun(t, append(append([]string{"config", "get", "--broker", b.URL()}, tlsFlags...), "--fleet", "met", "--device", "bwc-0001", "--pub", prefix+".pub", "--wait", "1s")...)
	if code != 0 || !strings.Contains(out, "version 42, target met:all") || !strings.Contains(out, "(verified)") ||
		!strings.Contains(out, `max_interval = "20s"`) || !regexp.MustCompile(`(?m)^bwc-0001\s+42\s+42\s+applied`).MatchString(out) {
		t.Fatalf("config get: exit %d\n%s\n%s", code, out, errOut)
	}

	// status: one row per device from the retained state.
	code, out, errOut = fleetRun(t, append(append([]string{"status", "--broker", b.URL()}, tlsFlags...), "--fleet", "met", "--wait", "1s")...)
	t.Logf("status:\n%s", out)
	if code != 0 || !regexp.MustCompile(`(?m)^bwc-0001\s+yes\s+\d+s ago\s+81% discharging\s+1200 \(87.9 KiB\)\s+lte home -71 dBm\s+fix\s+42`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^bwc-0099\s+no\s`).MatchString(out) || !strings.Contains(out, "5 devices, 4 online") ||
		!regexp.MustCompile(`(?m)^bwc-0003\s.*\(v42 rejected\)`).MatchString(out) {
		t.Fatalf("status: exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestCmd(t *testing.T) {
	b := broker.StartMochi(t)
	prefix := filepath.Join(t.TempDir(), "fleet")
	fleetRun(t, "keygen", "--out", prefix)
	pubText, _ := os.ReadFile(prefix + ".pub")
	fleetDevice(t, nil, b.URL(), "bwc-0001", strings.TrimSpace(string(pubText)), nil, nil, map[string]fleetctl.CommandFunc{
		"locate": func(context.Context, map[string]string) (any, error) {
			return map[string]float64{"lat": 51.5, "lon": -0.12}, nil
		},
	})
	args := []string{"cmd", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0001", "--sign-key", prefix + ".key", "--timeout", "5s"}
	code, out, errOut := fleetRun(t, append(args, "locate")...)
	if code != 0 || !strings.Contains(out, `"status":"ok"`) || !strings.Contains(out, `"lat":51.5`) {
		t.Fatalf("locate: %d %s %s", code, out, errOut)
	}
	code, out, _ = fleetRun(t, append(args, "privacy", "on")...)
	if code != 0 || !strings.Contains(out, `"privacy":"pause"`) {
		t.Fatalf("privacy on: %d %s", code, out)
	}
	code, out, errOut = fleetRun(t, append(args, "selfdestruct")...)
	if code != 1 || !strings.Contains(out, `"status":"rejected"`) || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("unknown command: %d %s %s", code, out, errOut)
	}
	if code, _, _ := fleetRun(t, "cmd", "--broker", b.URL(), "--fleet", "met", "locate"); code != 2 {
		t.Fatalf("missing --device: exit %d, want 2", code)
	}
}

// TestFleetRefusesPlaintextToRemoteHost: status, config and cmd refuse
// tcp:// to a host that is not loopback, before connecting, unless
// --allow-plaintext is given.
func TestFleetRefusesPlaintextToRemoteHost(t *testing.T) {
	for _, args := range [][]string{
		{"status", "--broker", "tcp://198.18.0.1:1883", "--fleet", "met"},
		{"config", "get", "--broker", "tcp://198.18.0.1:1883", "--fleet", "met", "--device", "d1"},
		{"cmd", "--broker", "tcp://198.18.0.1:1883", "--fleet", "met", "--device", "d1", "status"},
	} {
		code, _, e := fleetRun(t, args...)
		if code != 2 || !strings.Contains(e, "plaintext") {
			t.Errorf("%v: exit %d: %s", args, code, e)
		}
	}
}
