package web

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fleetsim"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// rig is a platform as serve runs it: an in-process mochi broker, the
// real ingest into a SQLite store, and web.Start over HTTPS with a
// self-signed certificate, fed by simulated devices over real MQTT
// sessions.
type rig struct {
	t      *testing.T
	broker *broker.Broker
	store  *platform.Store
	http   *Listening
	base   string
	fleet  *fleetsim.Fleet
	// emergencyCommitted is when ingest last committed an emergency
	// (Unix ms), for the bench's breakdown of the banner's latency.
	emergencyCommitted atomic.Int64
}

const (
	testFleet    = "met"
	viewerPass   = "viewer-pass-1"
	superPass    = "super-pass-1"
	testDeadline = 30 * time.Second
)

func startRig(t *testing.T, devices int) *rig {
	t.Helper()
	return startRigDB(t, devices, "")
}

// startRigDB is startRig on dbURL (empty: SQLite in a temp dir).
func startRigDB(t *testing.T, devices int, dbURL string) *rig {
	t.Helper()
	dir := t.TempDir()
	if dbURL == "" {
		dbURL = "sqlite:" + filepath.Join(dir, "p.db")
	}
	r := &rig{t: t, broker: broker.StartMochi(t)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var err error
	if r.store, err = platform.Open(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.store.Close() })
	commits := NewCommits()
	onCommit := func(rows []platform.Row, at time.Time) {
		for i := range rows {
			if ev, ok := rows[i].Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
				r.emergencyCommitted.Store(time.Now().UnixMilli())
			}
		}
		commits.OnCommit(rows, at)
	}
	in, err := platform.NewIngest(r.store, platform.IngestOptions{Broker: r.broker.URL(), ClientID: "web-test", Logger: slog.New(slog.DiscardHandler), OnCommit: onCommit})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = in.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	users := filepath.Join(dir, "users")
	v, _ := HashLine("olive", RoleViewer, viewerPass)
	s, _ := HashLine("sam", RoleSupervisor, superPass)
	if err := os.WriteFile(users, []byte("# test users\n"+v+"\n"+s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.http, err = Start(ctx, HTTPConfig{Addr: "127.0.0.1:0", UsersFile: users, Commits: commits, TLSDir: filepath.Join(dir, "tls")}, r.store,
		platform.API(r.store, platform.NewMetrics(), in.Connected), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.http.Close() })
	r.base = "https://" + r.http.Addr
	for !in.Connected() {
		if ctx.Err() != nil {
			t.Fatal("ingest never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if devices > 0 {
		if r.fleet, err = fleetsim.Start(ctx, fleetsim.Config{Broker: r.broker.URL(), Fleet: testFleet, Devices: devices, Rate: float64(envN("KESTREL_DASHBOARD_RATE_MILLI", 2000)) / 1000, BatchAge: 200 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.fleet.Close)
	}
	return r
}

// waitDevices waits until the store knows n devices with a fix.
func (r *rig) waitDevices(n int) {
	r.t.Helper()
	end := time.Now().Add(testDeadline + time.Duration(n)*20*time.Millisecond)
	for {
		devs, err := r.store.Devices(context.Background(), testFleet)
		if err != nil {
			r.t.Fatal(err)
		}
		with := 0
		for _, d := range devs {
			if d.LastLat != nil {
				with++
			}
		}
		if with >= n {
			return
		}
		if time.Now().After(end) {
			r.t.Fatalf("%d of %d devices have a fix", with, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unit is one more simulated device, driven by the test: a real
// transport session over its own spool stand-in.
type unit struct {
	id     string
	outbox *broker.Outbox
	seq    uint64
	sess   *mqtt.Session
	mu     sync.Mutex
	st     map[string]any // the agent's fields of its state message
}

// setState sets the agent's fields of the unit's state message and
// publishes it (or the next birth carries it).
func (u *unit) setState(st map[string]any) {
	u.mu.Lock()
	u.st = st
	u.mu.Unlock()
	_ = u.sess.PublishState()
}

func (u *unit) state() map[string]any {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

func (r *rig) unit(id string) *unit {
	r.t.Helper()
	u := &unit{id: id, outbox: broker.NewOutbox()}
	s, err := mqtt.New(mqtt.Options{URLs: []string{r.broker.URL()}, Fleet: testFleet, Device: id, Boot: 1, Version: "test-unit",
		BatchAge: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), State: u.state}, u.outbox)
	if err != nil {
		r.t.Fatal(err)
	}
	u.sess = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	r.t.Cleanup(func() { s.Close(); cancel(); <-done })
	return u
}

func (u *unit) fix(lat, lon float64, at time.Time) {
	u.seq++
	u.outbox.Add(kestrel.Record{Envelope: kestrel.Envelope{Device: u.id, Boot: 1, Seq: u.seq, Time: at.UnixMilli(), Priority: kestrel.PriorityNormal},
		Body: &kestrel.Position{Lat: int32(lat * 1e7), Lon: int32(lon * 1e7), Mode: kestrel.Fix3D, Speed: 250, Flags: kestrel.HasSpeed}})
}

func (u *unit) battery(percent uint8) {
	u.seq++
	u.outbox.Add(kestrel.Record{Envelope: kestrel.Envelope{Device: u.id, Boot: 1, Seq: u.seq, Time: time.Now().UnixMilli(), Priority: kestrel.PriorityBulk},
		Body: &kestrel.Battery{Capacity: percent, Status: "Discharging", VoltageMV: 3900}})
}

func (u *unit) emergency() {
	u.seq++
	u.outbox.Add(kestrel.Record{Envelope: kestrel.Envelope{Device: u.id, Boot: 1, Seq: u.seq, Time: time.Now().UnixMilli(), Priority: kestrel.PriorityEmergency},
		Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "firmware", Name: "side-button", Value: 1, Text: "pressed"}})
}

// client is an HTTPS client that trusts the rig's self-signed certificate
// (by skipping verification: the test checks the server, not the PKI).
func (r *rig) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login logs c in and returns the session's CSRF token.
func (r *rig) login(c *http.Client, user, pass string) string {
	r.t.Helper()
	resp, err := c.PostForm(r.base+"/login", url.Values{"user": {user}, "password": {pass}})
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		r.t.Fatalf("login %s: %d %s", user, resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = c.Get(r.base + "/web/session")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	_, tok, _ := strings.Cut(b.String(), `"csrf":"`)
	tok, _, _ = strings.Cut(tok, `"`)
	if tok == "" {
		r.t.Fatalf("no csrf token in %s", b.String())
	}
	return tok
}

func (r *rig) audit(action string) []AuditRow {
	r.t.Helper()
	rows, err := Audit(context.Background(), r.store.DB())
	if err != nil {
		r.t.Fatal(err)
	}
	var out []AuditRow
	for _, a := range rows {
		if a.Action == action {
			out = append(out, a)
		}
	}
	return out
}

func (r *rig) String() string { return fmt.Sprintf("rig %s", r.base) }
