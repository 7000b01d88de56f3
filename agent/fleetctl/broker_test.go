package fleetctl

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// device is one agent as far as remote config goes: a Manager on a real
// MQTT connection, with a door that keeps the running config and moves
// the connection when broker.urls changes.
type device struct {
	t      testing.TB
	m      *Manager
	link   *pahoLink
	door   *testDoor
	cancel context.CancelFunc
	done   chan error
}

func startDevice(t testing.TB, cfg config.Config, tune func(*Options)) *device {
	t.Helper()
	d := &device{t: t}
	d.link = newPahoLink(t, cfg.Device.Fleet, cfg.Device.ID, cfg.Broker.URLs)
	opts := Options{
		Current:    cfg,
		Connected:  d.link.Connected,
		CheckEvery: 50 * time.Millisecond,
	}
	if tune != nil {
		tune(&opts)
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	d.m = m
	d.door = newTestDoor(m.StartConfig(), func(old, new config.Config) error {
		if !slices.Equal(old.Broker.URLs, new.Broker.URLs) {
			d.link.reconnect(new.Broker.URLs) // the broker session last
		}
		return nil
	})
	if err := m.Attach(d.door, d.link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan error, 1)
	go func() { d.done <- m.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *device) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		d.t.Error("Run did not return")
	}
	d.cancel = nil
}

// waitIdle waits until every queued report, reply and audit entry is
// acknowledged by the broker.
func (d *device) waitIdle() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.m.outMu.Lock()
		n := len(d.m.out)
		d.m.outMu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.t.Fatal("publish queue never drained")
}

func (d *device) running() (config.Config, int) { return d.door.applied() }

// reports decodes the config/reported messages seen so far.
func reports(t testing.TB, msgs []broker.Message) []*fleet.Report {
	var out []*fleet.Report
	for _, m := range msgs {
		r, err := fleet.DecodeReport(m.Payload)
		if err != nil {
			t.Fatalf("bad report on %s: %v", m.Topic, err)
		}
		out = append(out, r)
	}
	return out
}

// waitReport waits for a report from dev matching ok.
func waitReport(t testing.TB, o *broker.Observer, dev string, timeout time.Duration, ok func(*fleet.Report) bool) *fleet.Report {
	t.Helper()
	var found *fleet.Report
	o.Wait(timeout, func(msgs []broker.Message) bool {
		for _, r := range reports(t, msgs) {
			if r.Device == dev && ok(r) {
				found = r
				return true
			}
		}
		return false
	})
	if found == nil {
		var got []string
		for _, r := range reports(t, o.Messages()) {
			b, _ := json.Marshal(r)
			got = append(got, string(b))
		}
		t.Fatalf("no matching report from %s; got:\n%s", dev, strings.Join(got, "\n"))
	}
	return found
}

// TestFleetOf50 is the acceptance test: 50 agents in one process, each
// with its own transport/mqtt session over mutual TLS, receive a
// fleet-wide config through a real broker and all report it applied.
func TestFleetOf50(t *testing.T) {
	ca := broker.NewCA(t)
	b := broker.StartMochi(t, broker.WithTLS(ca))
	tlsCfg, err := mqtt.LoadTLS(ca.CAFile, ca.ClientCert, ca.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := testKey(1)
	const n = 50
	obs := b.Observe("kestrel/v1/met/+/config/reported")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	type agent struct {
		m    *Manager
		door *testDoor
	}
	agents := make([]*agent, n)
	for i := range agents {
		id := fmt.Sprintf("bwc-%04d", i)
		cfg := deviceConfig(t, "met", id, b.URL(), pub)
		sess, err := mqtt.New(mqtt.Options{URLs: cfg.Broker.URLs, Fleet: "met", Device: id, Boot: 1, Version: "test",
			TLS: tlsCfg, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, broker.NewOutbox())
		if err != nil {
			t.Fatal(err)
		}
		a := &agent{}
		a.m, err = NewManager(Options{Current: cfg, Connected: sess.Connected, CheckEvery: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = a
		wg.Add(2)
		go func() { defer wg.Done(); sess.Run(ctx); sess.Close() }()
		go func() { defer wg.Done(); a.m.Run(ctx) }()
		a.door = newTestDoor(cfg, nil)
		if err := a.m.Attach(a.door, sess); err != nil {
			t.Fatal(err)
		}
	}
	p := newPlatformTLS(t, b.URL(), ca)
	p.pushConfig(priv, fleet.AllDevices("met"), 7, `
[tracking]
max_interval = "30s"
distance = 25.0
[privacy]
on_mode = "coarse"
grid = 500.0
`)
	applied := map[string]bool{}
	ok := obs.Wait(60*time.Second, func(msgs []broker.Message) bool {
		for _, r := range reports(t, msgs) {
			if r.Version == 7 && r.Status == fleet.StatusApplied && r.Running == 7 {
				applied[r.Device] = true
			}
		}
		return len(applied) == n
	})
	if !ok {
		t.Fatalf("%d of %d devices reported version 7 applied", len(applied), n)
	}
	kid := fleet.KeyID(priv.Public().(ed25519.PublicKey))
	for _, a := range agents {
		c, _ := a.door.applied()
		if c.Version != 7 || c.Tracking.MaxInterval.Duration != 30*time.Second || c.Privacy.Grid != 500 ||
			c.Tracking.Distance != 25 || c.Device.ID != a.m.dev {
			t.Fatalf("%s runs %+v", a.m.dev, c.Tracking)
		}
		// Every device audited the attempt with the signer's key id.
		au := a.m.Audit()
		if len(au) == 0 || au[len(au)-1].Result != fleet.StatusApplied || au[len(au)-1].KeyID != kid {
			t.Fatalf("%s audit: %+v", a.m.dev, au)
		}
	}
}

// TestRejections: unsigned, wrongly signed, replayed, older, oversized and
// invalid configs are each rejected with a clear reported error, and the
// running config is unchanged.
func TestRejections(t *testing.T) {
	b := broker.StartMochi(t)
	priv, pub := testKey(1)
	stranger, _ := testKey(2)
	cfg := deviceConfig(t, "met", "bwc-0001", b.URL(), pub)
	cfg.Device.Group = []string{"north"}
	d := startDevice(t, cfg, nil)
	obs := b.Observe("kestrel/v1/met/bwc-0001/config/reported")
	p := newPlatform(t, b.URL())
	me := fleet.Device("met", "bwc-0001")

	env1 := p.pushConfig(priv, me, 1, "[gps]\nbaud = 4800\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 1 && r.Status == fleet.StatusApplied })
	p.pushConfig(priv, me, 2, "[gps]\nbaud = 9600\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusApplied })
	before, nBefore := d.running()

	tampered := func() []byte {
		env, _ := fleet.SignConfig(priv, me, 10, []byte("[gps]\nbaud = 19200\n"))
		var e fleet.ConfigEnvelope
		json.Unmarshal(env, &e)
		e.Body = []byte("[gps]\nbaud = 38400\n")
		out, _ := json.Marshal(&e)
		return out
	}
	sign := func(k ed25519.PrivateKey, tg fleet.Target, v uint64, body string) []byte {
		env, err := fleet.SignConfig(k, tg, v, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	big := sign(priv, me, 11, "# "+strings.Repeat("x", 60<<10)+"\n")
	big = append(big[:len(big)-1], []byte(`,"pad":"`+strings.Repeat("y", 40<<10)+`"}`)...)
	cases := []struct {
		name    string
		topic   string
		payload []byte
		version uint64
		want    error
		path    string
	}{
		{"unsigned", me.Topic(), sign(nil, me, 3, "[gps]\nbaud = 19200\n"), 3, fleet.ErrUnsigned, ""},
		{"untrusted key", me.Topic(), sign(stranger, me, 4, "[gps]\nbaud = 19200\n"), 4, fleet.ErrUntrustedKey, ""},
		{"bad signature", me.Topic(), tampered(), 10, fleet.ErrBadSignature, ""},
		{"replayed", me.Topic(), env1, 1, fleet.ErrReplay, ""},
		{"older", me.Topic(), sign(priv, me, 2, "[gps]\nbaud = 19200\n"), 2, fleet.ErrStale, ""},
		{"oversized", me.Topic(), big, 0, fleet.ErrTooLarge, ""},
		{"invalid value", me.Topic(), sign(priv, me, 12, "[gps]\nbaud = 9601\n"), 12, config.ErrInvalidValue, "gps.baud"},
		{"unknown key", me.Topic(), sign(priv, me, 13, "[gps]\nbuad = 9600\n"), 13, config.ErrUnknownKey, "gps.buad"},
		{"no keys left", me.Topic(), sign(priv, me, 17, "[remote]\ntrusted_keys = []\n"), 17, config.ErrInvalidValue, "remote.trusted_keys"},
		{"local-only key", me.Topic(), sign(priv, me, 14, "[spool]\ndir = \"/tmp/elsewhere\"\n"), 14, config.ErrNotRemote, "spool.dir"},
		{"wrong device", me.Topic(), sign(priv, fleet.Device("met", "bwc-0002"), 15, "[gps]\nbaud = 19200\n"), 15, fleet.ErrWrongTarget, ""},
		{"wrong scope", fleet.Group("met", "north").Topic(), sign(priv, fleet.AllDevices("met"), 16, "[gps]\nbaud = 19200\n"), 16, fleet.ErrWrongTarget, ""},
		{"malformed", me.Topic(), []byte(`{"kestrel":"kestrel-config/9"}`), 0, fleet.ErrMalformed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mark := obs.Len()
			p.publish(tc.topic, tc.payload, true)
			var got *fleet.Report
			obs.Wait(10*time.Second, func(msgs []broker.Message) bool {
				for _, r := range reports(t, msgs[mark:]) {
					if r.Status == fleet.StatusRejected {
						got = r
						return true
					}
				}
				return false
			})
			if got == nil {
				t.Fatal("no rejection reported")
			}
			if got.Version != tc.version || got.Running != 2 || len(got.Errors) == 0 {
				t.Fatalf("report %+v", got)
			}
			text := ""
			paths := []string{}
			for _, e := range got.Errors {
				text += e.Error + "; "
				paths = append(paths, e.Path)
			}
			if !strings.Contains(text, tc.want.Error()) {
				t.Errorf("reported %q, want it to say %q", text, tc.want)
			}
			if tc.path != "" && !slices.Contains(paths, tc.path) {
				t.Errorf("reported paths %v, want %s", paths, tc.path)
			}
			t.Logf("%s: %s", tc.name, text)
			after, n := d.running()
			if n != nBefore || len(config.Diff(before, after)) != 0 || d.m.Version() != 2 {
				t.Fatalf("running config changed: %v", config.Diff(before, after))
			}
			if junkReason(tc.want) != "other" {
				// Unverified: counted in the junk summary, not entered.
				if d.m.JunkCount() == 0 {
					t.Fatal("unverified config not counted as junk")
				}
				return
			}
			a := d.m.Audit()
			if last := a[len(a)-1]; last.Result != fleet.StatusRejected || last.Error == "" || !last.Verified {
				t.Fatalf("not audited with its verified signer: %+v", last)
			}
		})
	}
	// The retained copy of the running config, delivered again on a
	// reconnect, is not reprocessed, reported or audited.
	p.pushConfig(priv, me, 20, "[gps]\nbaud = 57600\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 20 && r.Status == fleet.StatusApplied })
	d.waitIdle() // the report's PUBACK is in, so it is not sent again
	nAudit, nReports := len(d.m.Audit()), obs.Len()
	redelivered(t, d, func() { d.link.reconnect([]string{b.URL()}) })
	if len(d.m.Audit()) != nAudit || obs.Len() != nReports {
		for _, r := range reports(t, obs.Messages()[nReports:]) {
			t.Logf("extra report: %+v", r)
		}
		t.Fatalf("retained config reprocessed after reconnect: audit %d→%d, reports %d→%d", nAudit, len(d.m.Audit()), nReports, obs.Len())
	}
	// Nor after a stray non-retained message on the topic in between: the
	// junk is rejected once, the running config's retained copy is quiet.
	p.publish(me.Topic(), []byte("junk"), false)
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool {
		return r.Status == fleet.StatusRejected && r.Version == 0 && r.Running == 20
	})
	d.waitIdle()
	nAudit, nReports = len(d.m.Audit()), obs.Len()
	redelivered(t, d, func() { d.link.reconnect([]string{b.URL()}) })
	if len(d.m.Audit()) != nAudit || obs.Len() != nReports {
		t.Fatalf("running config's retained copy reported after stray message: audit %d→%d, reports %d→%d", nAudit, len(d.m.Audit()), nReports, obs.Len())
	}
}

// redelivered runs reconnect and waits until the broker has delivered the
// retained config again (however long a loaded machine takes), then gives a
// wrongly reprocessed copy half a second to show in the audit and reports.
func redelivered(t *testing.T, d *device, reconnect func()) {
	t.Helper()
	got := d.link.got.Load()
	reconnect()
	deadline := time.Now().Add(15 * time.Second)
	for d.link.got.Load() == got {
		if time.Now().After(deadline) {
			t.Fatal("the retained config was not delivered again: the check proves nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
}

// TestConnectivityRollback: a config that moves the device to a broker it
// cannot reach is rolled back after remote.rollback_after, and the device
// reports why once it is back.
func TestConnectivityRollback(t *testing.T) {
	b := broker.StartMochi(t)
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "bwc-0001", b.URL(), pub)
	d := startDevice(t, cfg, func(o *Options) { o.RollbackAfter = 2 * time.Second })
	obs := b.Observe("kestrel/v1/met/bwc-0001/config/reported")
	p := newPlatform(t, b.URL())
	me := fleet.Device("met", "bwc-0001")

	p.pushConfig(priv, me, 1, "[tracking]\ndistance = 20.0\n")
	waitReport(t, obs, "bwc-0001", 10*time.Second, func(r *fleet.Report) bool { return r.Version == 1 && r.Status == fleet.StatusApplied })
	// Wait for confirmation, so version 1 becomes the last good config.
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.m.mu.Lock()
		g := d.m.st.GoodLayers["device/bwc-0001"]
		confirmed := g != nil && g.Version == 1
		d.m.mu.Unlock()
		if confirmed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("version 1 never confirmed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Version 2 points at a port where nothing listens.
	dead := "tcp://127.0.0.1:1"
	p.pushConfig(priv, me, 2, fmt.Sprintf("[broker]\nurls = [%q]\n[tracking]\ndistance = 99.0\n", dead))
	r := waitReport(t, obs, "bwc-0001", 20*time.Second, func(r *fleet.Report) bool { return r.Version == 2 && r.Status == fleet.StatusRolledBack })
	if r.Running != 1 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error, "no broker reachable") {
		t.Fatalf("rollback report: %+v", r)
	}
	c, n := d.running()
	if c.Version != 1 || c.Broker.URLs[0] != b.URL() || c.Tracking.Distance != 20 || n != 3 {
		t.Fatalf("after rollback running version %d urls %v distance %v (%d applies)", c.Version, c.Broker.URLs, c.Tracking.Distance, n)
	}
	a := d.m.Audit()
	if last := a[len(a)-1]; last.Kind != "rollback" || last.Version != 2 || last.Result != fleet.StatusRolledBack {
		t.Fatalf("audit: %+v", last)
	}
	// The retained version 2 comes back on reconnect and is not applied again.
	time.Sleep(300 * time.Millisecond)
	if _, n2 := d.running(); n2 != n {
		t.Fatal("rolled-back config applied again")
	}
	// After a restart the device runs version 1 and still refuses version 2.
	d.stop()
	m2, err := NewManager(Options{Current: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if got := m2.StartConfig(); got.Version != 1 || got.Tracking.Distance != 20 {
		t.Fatalf("after restart: version %d distance %v", got.Version, got.Tracking.Distance)
	}
}

// TestCommandsOverBroker: signed commands with request ids and reply
// channels, the built-in privacy switch, and the refusals.
func TestCommandsOverBroker(t *testing.T) {
	b := broker.StartMochi(t)
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "bwc-0001", b.URL(), pub)
	policy := tracking.New(cfg.Tracking, cfg.Privacy)
	var restarted sync.WaitGroup
	restarted.Add(1)
	d := startDevice(t, cfg, func(o *Options) {
		o.Privacy = policy
		o.Commands = map[string]CommandFunc{
			"locate": func(ctx context.Context, args map[string]string) (any, error) {
				return map[string]any{"lat": 51.5, "lon": -0.12}, nil
			},
			"selftest": func(ctx context.Context, args map[string]string) (any, error) {
				return nil, errors.New("gps: no data")
			},
			"restart": func(ctx context.Context, args map[string]string) (any, error) {
				return Deferred{Result: "restarting", Then: restarted.Done}, nil
			},
		}
	})
	_ = d
	replies := b.Observe("kestrel/v1/met/bwc-0001/reply/#")
	p := newPlatform(t, b.URL())
	topic := "kestrel/v1/met/bwc-0001/cmd"
	send := func(k ed25519.PrivateKey, c fleet.Command) *fleet.Reply {
		t.Helper()
		c.Fleet, c.Reply = "met", "reply/ctl-1"
		if c.Device == "" {
			c.Device = "bwc-0001"
		}
		payload, err := fleet.SignCommand(k, c)
		if err != nil {
			t.Fatal(err)
		}
		mark := replies.Len()
		p.publish(topic, payload, false)
		var got *fleet.Reply
		replies.Wait(10*time.Second, func(msgs []broker.Message) bool {
			for _, m := range msgs[mark:] {
				r, err := fleet.DecodeReply(m.Payload)
				if err != nil {
					t.Fatalf("bad reply: %v", err)
				}
				if r.ID == c.ID {
					got = r
					return true
				}
			}
			return false
		})
		if got == nil {
			t.Fatalf("no reply to %s", c.ID)
		}
		return got
	}
	if r := send(priv, fleet.Command{ID: "r1", Name: "locate"}); r.Status != fleet.ReplyOK || !strings.Contains(string(r.Result), "51.5") {
		t.Fatalf("locate: %+v", r)
	}
	if r := send(priv, fleet.Command{ID: "r2", Name: "selftest"}); r.Status != fleet.ReplyError || r.Error != "gps: no data" {
		t.Fatalf("selftest: %+v", r)
	}
	if r := send(priv, fleet.Command{ID: "r3", Name: "privacy", Args: map[string]string{"mode": "on"}}); r.Status != fleet.ReplyOK || policy.PrivacyMode() != tracking.PrivacyPause {
		t.Fatalf("privacy on: %+v, mode %s", r, policy.PrivacyMode())
	}
	if r := send(priv, fleet.Command{ID: "r4", Name: "restart"}); r.Status != fleet.ReplyOK {
		t.Fatalf("restart: %+v", r)
	}
	done := make(chan struct{})
	go func() { restarted.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("restart's Then never ran")
	}
	stranger, _ := testKey(9)
	for _, tc := range []struct {
		key  ed25519.PrivateKey
		c    fleet.Command
		want error
	}{
		{priv, fleet.Command{ID: "r1", Name: "locate"}, fleet.ErrReplayedCmd},
		{nil, fleet.Command{ID: "r5", Name: "locate"}, fleet.ErrUnsigned},
		{stranger, fleet.Command{ID: "r6", Name: "locate"}, fleet.ErrUntrustedKey},
		{priv, fleet.Command{ID: "r7", Name: "locate", Issued: time.Now().Add(-time.Hour).UnixMilli()}, fleet.ErrExpired},
		{priv, fleet.Command{ID: "r8", Name: "selfdestruct"}, fleet.ErrUnknownCommand},
		{priv, fleet.Command{ID: "r9", Name: "locate", Device: "bwc-0002"}, fleet.ErrWrongTarget},
	} {
		r := send(tc.key, tc.c)
		if r.Status != fleet.ReplyRejected || !strings.Contains(r.Error, tc.want.Error()) {
			t.Errorf("%s: %+v, want rejected with %q", tc.c.ID, r, tc.want)
		}
	}
	if r := send(priv, fleet.Command{ID: "r10", Name: "privacy", Args: map[string]string{"mode": "off"}}); r.Status != fleet.ReplyOK || policy.PrivacyMode() != tracking.PrivacyOff {
		t.Fatalf("privacy off: %+v", r)
	}
	// Every attempt is in the audit log, with its key id.
	kinds := map[string]int{}
	for _, e := range d.m.Audit() {
		if e.Kind == "command" {
			kinds[e.Result]++
		}
	}
	// r5 (unsigned) and r6 (unknown key) are unverified: counted as
	// junk, not entered.
	if kinds[fleet.ReplyOK] != 4 || kinds[fleet.ReplyError] != 1 || kinds[fleet.ReplyRejected] != 4 || d.m.JunkCount() != 2 {
		t.Fatalf("audit results %v, junk %d", kinds, d.m.JunkCount())
	}
}

// TestMosquitto runs a config push and a command through Debian's
// mosquitto (skipped where it is not installed).
func TestMosquitto(t *testing.T) {
	b := broker.StartMosquitto(t)
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "bwc-0001", b.URL(), pub)
	cfg.Device.Group = []string{"north"}
	d := startDevice(t, cfg, nil)
	p := newPlatform(t, b.URL())
	got := make(chan *fleet.Report, 16)
	p.cl.Subscribe("kestrel/v1/met/bwc-0001/config/reported", 1, wrap(func(_ string, b []byte) {
		if r, err := fleet.DecodeReport(b); err == nil {
			got <- r
		}
	})).Wait()
	p.pushConfig(priv, fleet.Group("met", "north"), 3, "[tracking]\nheading = 30.0\n")
	timeout := time.After(15 * time.Second)
	for {
		select {
		case r := <-got:
			if r.Version == 3 && r.Status == fleet.StatusApplied {
				if c, _ := d.running(); c.Tracking.Heading != 30 {
					t.Fatalf("heading %v", c.Tracking.Heading)
				}
				return
			}
		case <-timeout:
			t.Fatal("no applied report through mosquitto")
		}
	}
}
