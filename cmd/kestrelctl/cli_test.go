package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/agent/fleetctl"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// TestStatusRealAgent: status shows the real agent's version and uptime,
// and an offline device's last-known values from its will, marked offline;
// --json parses into the documented shape.
func TestStatusRealAgent(t *testing.T) {
	b, _, _, _ := rolloutRig(t, 1)
	p := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("ghost"))
	p.Connect().Wait()
	fix := time.Now().Add(-90 * time.Second).UnixMilli()
	p.Publish("kestrel/v1/met/bwc-0099/state", 1, true, stateMsg(false, map[string]any{"version": "1.2.0", "boot": 7, "last_fix_ms": fix})).Wait()
	p.Disconnect(0)

	code, out, e := fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s", "--json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d %v\n%s\n%s", code, err, out, e)
	}
	if rep.Total != 2 || rep.Online != 1 {
		t.Fatalf("total %d online %d", rep.Total, rep.Online)
	}
	live, ghost := rep.Devices[0], rep.Devices[1]
	if live.Device != "bwc-0001" || live.Online == nil || !*live.Online || live.AgentVersion != "test" || live.UptimeS == nil ||
		live.Started == nil || len(live.Groups) != 1 || live.Groups[0] != "north" || live.ConfigRunning == nil {
		t.Fatalf("live device: %s", out)
	}
	if ghost.Online == nil || *ghost.Online || ghost.AgentVersion != "1.2.0" || ghost.Boot == nil || *ghost.Boot != 7 ||
		ghost.UptimeS != nil || ghost.LastFixAgeS == nil || *ghost.LastFixAgeS < 89 {
		t.Fatalf("offline device: %s", out)
	}
	code, out, _ = fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s")
	t.Logf("status:\n%s", out)
	if code != 0 || !regexp.MustCompile(`(?m)^bwc-0001\s+yes\s.*\s5\s+test\s+\d+s\s+-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^bwc-0099\s+no\s.*\s1\.2\.0\s+-\s+1m ago$`).MatchString(out) {
		t.Fatalf("status table: exit %d\n%s", code, out)
	}
}

// TestEnvAndJSON: with the broker, TLS files, fleet and signing key in
// the environment only, tail, push, get, status and cmd all run and their
// --json output parses; on a pseudo-terminal push draws progress frames,
// elsewhere it prints plain lines.
func TestEnvAndJSON(t *testing.T) {
	ca := broker.NewCA(t)
	b := broker.StartMochi(t, broker.WithTLS(ca))
	dir := t.TempDir()
	prefix := filepath.Join(dir, "fleet")
	if code, _, e := fleetRun(t, "keygen", "--out", prefix); code != 0 {
		t.Fatal(e)
	}
	pubText, _ := os.ReadFile(prefix + ".pub")
	fleetDevice(t, ca, b.URL(), "bwc-0001", strings.TrimSpace(string(pubText)), []string{"north"}, nil, map[string]fleetctl.CommandFunc{
		"locate": func(context.Context, map[string]string) (any, error) { return map[string]float64{"lat": 51.5}, nil },
	})
	for k, v := range map[string]string{"KESTREL_BROKER": b.URL(), "KESTREL_CA": ca.CAFile, "KESTREL_CERT": ca.ClientCert,
		"KESTREL_KEY": ca.ClientKey, "KESTREL_FLEET": "met", "KESTREL_SIGNING_KEY": prefix + ".key"} {
		t.Setenv(k, v)
	}
	f := writeFile(t, dir, "c.toml", "[tracking]\ndistance = 25.0\n")
	code, out, e := fleetRun(t, "config", "push", "--device", "bwc-0001", "--version", "9", "--timeout", "10s", "--json", f)
	var pr pushReport
	if err := json.Unmarshal([]byte(out), &pr); code != 0 || err != nil || pr.Counts["applied"] != 1 || pr.Devices[0].Running != 9 {
		t.Fatalf("push: exit %d %v\n%s\n%s", code, err, out, e)
	}
	if strings.Contains(e, "\r") || !strings.Contains(e, "bwc-0001 applied (1/1)") {
		t.Errorf("not a terminal, so plain lines: %q", e)
	}
	code, out, e = fleetRun(t, "config", "get", "--device", "bwc-0001", "--pub", prefix+".pub", "--wait", "1s", "--json")
	var gr getReport
	if err := json.Unmarshal([]byte(out), &gr); code != 0 || err != nil || len(gr.Desired) != 3 || gr.Desired[0].Signature != "verified" ||
		gr.Desired[0].Version != 9 || len(gr.Reports) != 1 || gr.Reports[0].Running != 9 {
		t.Fatalf("get: exit %d %v\n%s\n%s", code, err, out, e)
	}
	code, out, e = fleetRun(t, "config", "get", "--device", "bwc-0001", "--effective", "--wait", "1s", "--json")
	var er fleet.Report
	if err := json.Unmarshal([]byte(out), &er); code != 0 || err != nil || len(er.Effective) == 0 {
		t.Fatalf("get --effective: exit %d %v\n%s\n%s", code, err, out, e)
	}
	code, out, e = fleetRun(t, "status", "--wait", "1s", "--json")
	var sr statusReport
	if err := json.Unmarshal([]byte(out), &sr); code != 0 || err != nil || sr.Total != 1 {
		t.Fatalf("status: exit %d %v\n%s\n%s", code, err, out, e)
	}
	code, out, e = fleetRun(t, "cmd", "--device", "bwc-0001", "--timeout", "5s", "--json", "locate")
	var reply fleet.Reply
	if err := json.Unmarshal([]byte(out), &reply); code != 0 || err != nil || reply.Status != "ok" {
		t.Fatalf("cmd: exit %d %v\n%s\n%s", code, err, out, e)
	}
	if code, _, e := fleetRun(t, "tail", "--for", "300ms", "--json"); code != 0 {
		t.Fatalf("tail: exit %d %s", code, e)
	}

	// On a terminal: frames redrawn with \r.
	term, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	slave, err := os.OpenFile(term.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	var mu sync.Mutex
	var seen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := term.Master.Read(buf)
			mu.Lock()
			seen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	var stdout bytes.Buffer
	code = dispatch([]string{"config", "push", "--device", "bwc-0001", "--version", "10", "--timeout", "10s", f},
		stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &stdout, stderr: slave})
	if code != 0 {
		t.Fatalf("push on a terminal: exit %d\n%s", code, stdout.String())
	}
	waitFor(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(seen.String(), "\r[##############################] 1/1")
	})
	mu.Lock()
	if strings.Contains(seen.String(), "bwc-0001 applied (1/1)") {
		t.Error("plain lines on a terminal")
	}
	mu.Unlock()
}

// TestStatusLastKnownFromPlatform: an offline device's will carries only
// the core fields; with --db, status fills battery, spool, radio and the
// last fix from what the platform stored of its last birth, marked as
// last known. Without --db those stay empty.
func TestStatusLastKnownFromPlatform(t *testing.T) {
	b := broker.StartMochi(t)
	url := "sqlite:" + filepath.Join(t.TempDir(), "k.db")
	st, err := platform.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	topic := wire.Topic("met", "bwc-0099", "state")
	var batch platform.Batch
	birth := stateMsg(true, map[string]any{"version": "1.2.0", "boot": 7, "battery": 64, "battery_status": "Discharging",
		"spool_records": 12, "spool_bytes": 4096, "radio_profile": "lte", "radio_registered": 1, "radio_rssi": -80})
	will := stateMsg(false, map[string]any{"version": "1.2.0", "boot": 7})
	for i, p := range [][]byte{birth, will} {
		if err := batch.Add(platform.Message{Topic: topic, Payload: p, Received: time.Now().Add(time.Duration(i-2) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Write(context.Background(), &batch); err != nil {
		t.Fatal(err)
	}
	st.Close()
	p := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("ghost"))
	p.Connect().Wait()
	p.Publish(topic, 1, true, will).Wait()
	p.Disconnect(0)

	run := func(extra ...string) deviceStatus {
		t.Helper()
		code, out, e := fleetRun(t, append([]string{"status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s", "--json"}, extra...)...)
		var rep statusReport
		if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || len(rep.Devices) != 1 {
			t.Fatalf("status %v: exit %d %v\n%s\n%s", extra, code, err, out, e)
		}
		return rep.Devices[0]
	}
	if bare := run(); bare.Battery != nil || bare.LastKnownFrom != "" {
		t.Fatalf("without --db the will's fields grew: %+v", bare)
	}
	ds := run("--db", url)
	if ds.LastKnownFrom != "platform" || ds.Battery == nil || *ds.Battery != 64 || ds.SpoolRecords == nil || *ds.SpoolRecords != 12 ||
		ds.RadioProfile != "lte" || ds.RadioRSSI == nil || *ds.RadioRSSI != -80 {
		t.Fatalf("--db did not fill the last-known values: %+v", ds)
	}
	code, out, _ := fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "1s", "--db", url)
	if code != 0 || !regexp.MustCompile(`(?m)^bwc-0099\s+no \(last known\)\s.*64% discharging\s+12 \(4\.0 KiB\)\s+lte`).MatchString(out) {
		t.Fatalf("status table with --db: exit %d\n%s", code, out)
	}
}
