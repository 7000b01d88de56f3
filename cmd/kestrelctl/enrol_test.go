package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/wire"
	"github.com/tinylib/msgp/msgp"
)

// enrolTestDB stores a captured shift of bwc-4 and its state message
// (announcing key) through the platform's Write, in a SQLite database.
func enrolTestDB(t *testing.T, capture, key string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "kestrel.db")
	st, err := platform.Open(context.Background(), "sqlite:"+file)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var b platform.Batch
	state := msgp.AppendMapHeader(nil, 3)
	state = msgp.AppendString(state, "online")
	state = msgp.AppendBool(state, true)
	state = msgp.AppendString(state, "time")
	state = msgp.AppendInt64(state, 1_700_000_000_000)
	state = msgp.AppendString(state, "device_key")
	state = msgp.AppendString(state, key)
	if err := b.Add(platform.Message{Topic: "kestrel/v1/test/bwc-4/state", Payload: state, Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(capture), "\n") {
		topic, hx, _ := strings.Cut(l, " ")
		p, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Add(platform.Message{Topic: topic, Payload: p, Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Write(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return "sqlite:" + file
}

// TestEnrolAndVerifyDatabase: enrol, then verify the database directly,
// through a track export's evidence bundle and through evidence bundle
// --db; a re-enrolment needs --re-enrol; a tampered row fails verify.
func TestEnrolAndVerifyDatabase(t *testing.T) {
	capture, key := evidenceTestCapture(t, 200)
	db := enrolTestDB(t, capture, key)
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, stderr := wireTestRun(t, "", args...)
		if code != want {
			t.Fatalf("kestrelctl %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, stderr)
		}
		return out, stderr
	}
	// Not enrolled: verify names it.
	_, stderr := run(1, "verify", "--db", db, "--device", "bwc-4")
	if !strings.Contains(stderr, "not enrolled") {
		t.Fatalf("unenrolled: %s", stderr)
	}
	out, _ := run(0, "device", "enrol", "--db", db, "--fleet", "test", "--device", "bwc-4", "--key", key, "--by", "fitter 12")
	if !strings.Contains(out, "enrolled by fitter 12") {
		t.Fatalf("enrol: %s", out)
	}
	out, _ = run(0, "verify", "--db", db, "--device", "bwc-4")
	if !strings.Contains(out, "verified: device bwc-4") {
		t.Fatalf("verify --db: %s", out)
	}
	ev := filepath.Join(t.TempDir(), "track.evidence")
	out, _ = run(0, "track", "--db", db, "--device", "bwc-4", "--format", "geojson", "--evidence", ev)
	if !strings.Contains(out, "FeatureCollection") {
		t.Fatalf("track: %.200s", out)
	}
	if fi, err := os.Stat(ev); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("evidence file: %v %v", fi, err)
	}
	out, _ = run(0, "verify", ev)
	if !strings.Contains(out, "verified") {
		t.Fatalf("verify track evidence: %s", out)
	}
	bundle, _ := run(0, "evidence", "bundle", "--db", db, "--device", "bwc-4")
	if code, out, stderr := wireTestRun(t, bundle, "verify"); code != 0 {
		t.Fatalf("verify bundle --db: %d %s%s", code, out, stderr)
	}
	// Each read of personal data is in the consultations chain (s.62):
	// verify --db a consultation, track --evidence and evidence bundle
	// --db disclosures.
	{
		st, err := platform.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := st.Consultations(context.Background(), "")
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, c := range cs {
			seen[c.Command] = c.Outcome
		}
		if !strings.HasPrefix(seen["verify --db"], "ok") || !strings.HasPrefix(seen["evidence bundle --db"], "ok: ") ||
			!strings.Contains(seen["track"], "evidence bundle "+ev) {
			t.Fatalf("consultations of the evidence reads: %v", seen)
		}
	}
	out, _ = run(0, "device", "list", "--db", db)
	if !strings.Contains(out, "bwc-4") || !strings.Contains(out, "enrolled") {
		t.Fatalf("device list: %s", out)
	}
	out, _ = run(0, "device", "show", "--db", db, "--device", "bwc-4")
	if !strings.Contains(out, "enrolment 1: key") || !strings.Contains(out, "fitter 12") {
		t.Fatalf("device show: %s", out)
	}
	// Another key: refused without --re-enrol.
	other := "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
	_, stderr = run(1, "device", "enrol", "--db", db, "--fleet", "test", "--device", "bwc-4", "--key", other, "--by", "x")
	if !strings.Contains(stderr, "--re-enrol") {
		t.Fatalf("re-enrol without the flag: %s", stderr)
	}
	// A tampered row.
	st, err := platform.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().Exec("UPDATE positions SET lon = lon - 0.0000001 WHERE seq = 77"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, stderr = run(1, "verify", "--db", db, "--device", "bwc-4")
	if !strings.Contains(stderr, "altered") {
		t.Fatalf("tampered: %s", stderr)
	}
}

// TestEnrolFromBrokerAndStatusFlag: device enrol reads the key from the
// device's retained state message; status --db shows it enrolled, and
// flags the device once its retained state announces another key.
func TestEnrolFromBrokerAndStatusFlag(t *testing.T) {
	b := broker.StartMochi(t)
	db := "sqlite:" + filepath.Join(t.TempDir(), "k.db")
	st, err := platform.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	keyA := "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
	keyB := "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
	topic := wire.Topic("met", "bwc-0042", "state")
	p := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("device"))
	p.Connect().Wait()
	defer p.Disconnect(0)
	p.Publish(topic, 1, true, stateMsg(true, map[string]any{"version": "1.2.0", "boot": 3, "device_key": keyA})).Wait()

	code, out, e := fleetRun(t, "device", "enrol", "--db", db, "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0042", "--by", "fitter", "--wait", "1s")
	if code != 0 || !strings.Contains(out, "enrolled by fitter") {
		t.Fatalf("enrol from the broker: exit %d\n%s%s", code, out, e)
	}
	code, out, _ = fleetRun(t, "device", "show", "--db", db, "--device", "bwc-0042", "--json")
	var k platform.DeviceKey
	if err := json.Unmarshal([]byte(out), &k); code != 0 || err != nil || len(k.Enrolments) != 1 || k.Enrolments[0].Source != "broker" || k.Enrolments[0].DeviceKey != keyA {
		t.Fatalf("device show: exit %d %v\n%s", code, err, out)
	}
	status := func() (deviceStatus, string) {
		t.Helper()
		code, out, e := fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s", "--db", db, "--json")
		var rep statusReport
		if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || len(rep.Devices) != 1 {
			t.Fatalf("status: exit %d %v\n%s%s", code, err, out, e)
		}
		_, table, _ := fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s", "--db", db)
		return rep.Devices[0], table
	}
	if ds, table := status(); ds.KeyStatus != platform.KeyEnrolled || strings.Contains(table, "DEVICE KEY") {
		t.Fatalf("enrolled device: %+v\n%s", ds.KeyStatus, table)
	}
	p.Publish(topic, 1, true, stateMsg(true, map[string]any{"version": "1.2.0", "boot": 4, "device_key": keyB})).Wait()
	if ds, table := status(); !strings.HasPrefix(ds.KeyStatus, "CHANGED") || !strings.Contains(table, "bwc-0042: DEVICE KEY CHANGED") {
		t.Fatalf("changed key not flagged: %+v\n%s", ds.KeyStatus, table)
	}
}
