package scenario

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/hwtest/postgres"
	kplatform "github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

var (
	ctlOnce sync.Once
	ctlBin  string
	ctlErr  error
)

// kestrelctl builds the real kestrelctl once.
func kestrelctl(t *testing.T) string {
	t.Helper()
	ctlOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			ctlErr = err
			return
		}
		ctlBin = filepath.Join(binDir, "kestrelctl")
		cmd := exec.Command("go", "build", "-trimpath", "-o", ctlBin, "./cmd/kestrelctl")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			ctlErr = fmt.Errorf("build kestrelctl: %v\n%s", err, b)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlBin
}

// runCtl runs kestrelctl and returns its output and exit status.
func runCtl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(kestrelctl(t), args...)
	cmd.Env = append(os.Environ(), "KESTREL_OPERATOR=pc-4711")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// The tamper-evident audit end to end: the real agent behind a real
// broker, its config pushed, a command run, privacy toggled and a local
// reload, all land in the platform's audit_entries on SQLite and on
// PostgreSQL (two ingests of the same broker), where the chain verifies;
// then an entry altered, one deleted, two reordered and one forged in the
// database are each named by kestrelctl audit --verify.
func TestAuditChainEndToEnd(t *testing.T) {
	cmdline := command(t)
	t.Run("mochi", func(t *testing.T) { auditEndToEnd(t, cmdline, true) })
	t.Run("mosquitto", func(t *testing.T) { auditEndToEnd(t, cmdline, false) })
}

func auditEndToEnd(t *testing.T, cmdline []string, mochi bool) {
	ctx := timeout(t, 3*time.Minute)
	priv, pub := fleetKey(3)
	kid := fleet.KeyID(priv.Public().(ed25519.PublicKey))
	nmea, fixes := track(t, "amsterdam-static")
	e := New(t, Options{Command: cmdline, Track: nmea, Fixes: fixes, Mochi: mochi, Edit: func(c *config.Config) {
		c.Remote.TrustedKeys = []string{pub}
		c.Privacy.Docked = true
	}})

	stores := map[string]string{"sqlite": "sqlite:" + filepath.Join(e.Dir, "platform.db")}
	if err := postgres.Available(); err == nil {
		srv, err := postgres.New("fsync = off")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		stores["postgres"] = srv.URL(t)
	} else {
		t.Logf("PostgreSQL: %v (SQLite only)", err)
	}
	opened := map[string]*kplatform.Store{}
	for name, url := range stores {
		st, err := kplatform.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		opened[name] = st
		in, err := kplatform.NewIngest(st, kplatform.IngestOptions{Broker: e.Broker.URL(), ClientID: "audit-" + name, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ictx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- in.Run(ictx) }()
		t.Cleanup(func() { cancel(); <-done })
		for !in.Connected() {
			if ctx.Err() != nil {
				t.Fatal("ingest never connected")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond) // SUBACK

	e.Start()
	replay, stop := context.WithCancel(ctx)
	defer stop()
	e.StartReplay(replay)
	// The state message (with the device key) is stored before any entry.
	waitStores(t, ctx, opened, "the device's state", func(st *kplatform.Store) bool {
		devs, err := st.Devices(ctx, "scenario")
		return err == nil && len(devs) == 1 && devs[0].Online != nil && *devs[0].Online
	})

	fm := fleetClient(t, e.Broker.URL())
	env, err := fleet.SignConfig(priv, fleet.Device("scenario", "car-17"), 1, []byte("[tracking]\ndistance = 7.0\n"))
	if err != nil {
		t.Fatal(err)
	}
	fm.publish(t, fleet.DeviceTopic("scenario", "car-17", fleet.ChannelDesired), env, true)
	waitEntries(t, ctx, opened, 1)
	for i, mode := range []string{"on", "default"} {
		c, err := fleet.SignCommand(priv, fleet.Command{Fleet: "scenario", Device: "car-17", ID: fmt.Sprint("p", i), Name: "privacy", Args: map[string]string{"mode": mode}})
		if err != nil {
			t.Fatal(err)
		}
		fm.publish(t, fleet.DeviceTopic("scenario", "car-17", fleet.ChannelCmd), c, false)
		waitEntries(t, ctx, opened, 3+2*i) // the command and the privacy change
	}
	// An automatic trigger: the camera docked and undocked (firmware).
	for i, ev := range []string{"docked", "undocked"} {
		if _, err := eventsock.Send(e.Config.Hooks.Socket, ev, nil); err != nil {
			t.Fatal(err)
		}
		waitEntries(t, ctx, opened, 6+i)
	}
	local := e.Config
	local.Tracking.Heading = 33
	e.WriteConfig(local)
	e.Hup()
	waitEntries(t, ctx, opened, 8)

	for name, url := range stores {
		t.Run(name, func(t *testing.T) {
			st := opened[name]
			rows, err := st.AuditEntries(ctx, kplatform.AuditQuery{Device: "car-17"})
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]int{}
			for _, r := range rows {
				kinds[r.Kind]++
				if r.Problems != "" || r.Verdict != fleet.VerdictVerified {
					t.Errorf("seq %d %s flagged on insert: %s (%s)", r.Seq, r.Kind, r.Problems, r.Verdict)
				}
			}
			docked := 0
			for _, r := range rows {
				if r.Kind == "privacy" && r.Entry.Name == "docked" {
					docked++
				}
			}
			if kinds["config"] != 1 || kinds["command"] != 2 || kinds["privacy"] != 4 || docked != 2 || kinds["reload"] != 1 {
				t.Fatalf("entries by kind %v, %d by docking", kinds, docked)
			}
			for _, r := range rows {
				switch {
				case r.Kind == "config" && (r.By[0] != kid || len(r.Entry.Diff) != 1 || r.Entry.Diff[0].Path != "tracking.distance" || r.Entry.Diff[0].New != "7"):
					t.Errorf("config entry: by %v diff %+v", r.By, r.Entry.Diff)
				case r.Kind == "command" && (r.By[0] != kid || r.Entry.Name != "privacy" || r.Entry.Args["mode"] == ""):
					t.Errorf("command entry: by %v %s %v", r.By, r.Entry.Name, r.Entry.Args)
				case r.Kind == "privacy" && r.By[0] != fleet.ByDevice:
					t.Errorf("privacy entry by %v", r.By)
				case r.Kind == "reload" && (r.By[0] != fleet.ByLocal || len(r.Entry.Diff) != 1 || r.Entry.Diff[0].Path != "tracking.heading"):
					t.Errorf("reload entry: by %v diff %+v", r.By, r.Entry.Diff)
				}
			}
			out, code := runCtl(t, "audit", "--db", url, "--verify")
			if code != 0 || !strings.Contains(out, "device scenario/car-17: ") || !strings.Contains(out, ": verified") {
				t.Fatalf("clean chain: exit %d\n%s", code, out)
			}
			out, code = runCtl(t, "audit", "--db", url, "--device", "car-17")
			if code != 0 || !strings.Contains(out, "tracking.distance: 0 -> 7") || !strings.Contains(out, "privacy mode=on") {
				t.Fatalf("listing: exit %d\n%s", code, out)
			}

			// Tamper with the database as a privileged insider could.
			tamper := func(seq int, f func(string) string) {
				t.Helper()
				var p string
				if err := st.DB().QueryRowContext(ctx, q(st, "SELECT payload FROM audit_entries WHERE device = ? AND seq = ?"), "car-17", seq).Scan(&p); err != nil {
					t.Fatal(err)
				}
				if _, err := st.DB().ExecContext(ctx, q(st, "UPDATE audit_entries SET payload = ? WHERE device = ? AND seq = ?"), f(p), "car-17", seq); err != nil {
					t.Fatal(err)
				}
			}
			payloadOf := func(seq int) string {
				var p string
				st.DB().QueryRowContext(ctx, q(st, "SELECT payload FROM audit_entries WHERE device = ? AND seq = ?"), "car-17", seq).Scan(&p)
				return p
			}
			// seq 1 (the config): its new value changed.
			tamper(1, func(p string) string { return strings.Replace(p, `"new":"7"`, `"new":"700"`, 1) })
			// seq 3 deleted.
			if _, err := st.DB().ExecContext(ctx, q(st, "DELETE FROM audit_entries WHERE device = ? AND seq = ?"), "car-17", 3); err != nil {
				t.Fatal(err)
			}
			// seq 4 and 5 reordered.
			p4, p5 := payloadOf(4), payloadOf(5)
			tamper(4, func(string) string { return p5 })
			tamper(5, func(string) string { return p4 })
			// seq 6 re-signed by another key under the device's key id.
			tamper(6, func(p string) string {
				i := strings.LastIndex(p, `"sig":"`)
				other, _ := fleetKey(9)
				return p[:i] + `"sig":"` + base64.StdEncoding.EncodeToString(ed25519.Sign(other, []byte(p))) + `"}`
			})
			out, code = runCtl(t, "audit", "--db", url, "--verify")
			if code != 1 {
				t.Fatalf("tampered chain: exit %d, want 1\n%s", code, out)
			}
			for _, want := range []string{"seq 1: altered", "seq 3: missing", "deleted since", "seq 4: out of order", "seq 5: out of order", "seq 6: signature: bad signature"} {
				if !strings.Contains(out, want) {
					t.Errorf("kestrelctl audit --verify does not say %q", want)
				}
			}
			t.Logf("kestrelctl audit --verify on the tampered chain:\n%s", out)

			// Every read above is in the consultation chain, by operator.
			cs, err := st.Consultations(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != 6 || cs[0].Operator != "pc-4711" || cs[0].Command != "audit --verify" || cs[1].Outcome == "requested" {
				t.Fatalf("consultations %+v", cs)
			}
			if p, err := st.VerifyConsultations(ctx); err != nil || p != nil {
				t.Fatalf("consultation chain: %v %v", p, err)
			}
		})
	}
	stop()
}

func q(st *kplatform.Store, query string) string {
	if st.Dialect() != "postgres" {
		return query
	}
	n := 0
	var b strings.Builder
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func fleetKey(seed byte) (ed25519.PrivateKey, string) {
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(s)
	return priv, fleet.EncodePublicKey(priv.Public().(ed25519.PublicKey))
}

type fleetManager struct{ c paho.Client }

func fleetClient(t *testing.T, url string) *fleetManager {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprint("fleet-manager-", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("fleet manager connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &fleetManager{c}
}

func (f *fleetManager) publish(t *testing.T, topic string, payload []byte, retained bool) {
	t.Helper()
	if tok := f.c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func waitStores(t *testing.T, ctx context.Context, stores map[string]*kplatform.Store, what string, cond func(*kplatform.Store) bool) {
	t.Helper()
	for name, st := range stores {
		for !cond(st) {
			if ctx.Err() != nil {
				t.Fatalf("%s: waiting for %s: %v", name, what, ctx.Err())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func waitEntries(t *testing.T, ctx context.Context, stores map[string]*kplatform.Store, n int) {
	t.Helper()
	waitStores(t, ctx, stores, fmt.Sprintf("%d audit entries", n), func(st *kplatform.Store) bool {
		rows, err := st.AuditEntries(ctx, kplatform.AuditQuery{Device: "car-17"})
		return err == nil && len(rows) >= n
	})
}
