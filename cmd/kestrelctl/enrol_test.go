package main

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/platform"
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
