package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

// rolloutRig: a broker, a fleet key and n real agents in group north,
// bwc-0001 with a device-scope key of its own (tracking.max_interval).
func rolloutRig(t *testing.T, n int) (b *broker.Broker, agents map[string]*agent.Agent, dir string, common []string) {
	t.Helper()
	return rolloutRigOn(t, broker.StartMochi(t), n)
}

func rolloutRigOn(t *testing.T, b *broker.Broker, n int) (_ *broker.Broker, agents map[string]*agent.Agent, dir string, common []string) {
	t.Helper()
	dir = t.TempDir()
	prefix := filepath.Join(dir, "fleet")
	if code, _, e := fleetRun(t, "keygen", "--out", prefix); code != 0 {
		t.Fatal(e)
	}
	pubText, _ := os.ReadFile(prefix + ".pub")
	agents = map[string]*agent.Agent{}
	var ids []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("bwc-%04d", i)
		agents[id] = realDevice(t, b.URL(), id, strings.TrimSpace(string(pubText)), []string{"north"})
		ids = append(ids, id)
	}
	common = []string{"--broker", b.URL(), "--fleet", "met", "--sign-key", prefix + ".key", "--timeout", "10s"}
	own := writeFile(t, dir, "own.toml", "[tracking]\nmax_interval = \"30s\"\n")
	if code, out, e := fleetRun(t, append(append([]string{"config", "push", "--device", "bwc-0001"}, common...), "--version", "5", own)...); code != 0 {
		t.Fatalf("device push: %d\n%s\n%s", code, out, e)
	}
	// Every device has reported its effective config, so discovery knows
	// them all.
	waitFor(t, 10*time.Second, func() bool {
		code, out, _ := fleetRun(t, "status", "--broker", b.URL(), "--fleet", "met", "--wait", "300ms")
		return code == 0 && strings.Contains(out, fmt.Sprintf("%d devices", n))
	})
	return b, agents, dir, append(common, "--devices", strings.Join(ids, ","))
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !ok() {
		if time.Now().After(end) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPushDryRun: --dry-run prints each device's change key by key with
// the scopes, publishes nothing, and its --json parses.
func TestPushDryRun(t *testing.T) {
	b, agents, dir, common := rolloutRig(t, 2)
	obs := b.Observe("kestrel/v1/met/#")
	f := writeFile(t, dir, "north.toml", "[tracking]\nmax_interval = \"45s\"\ndistance = 70.0\n")
	code, out, e := fleetRun(t, append(append([]string{"config", "push", "--group", "north", "--dry-run"}, common...), f)...)
	t.Logf("dry run:\n%s", out)
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, e)
	}
	for _, re := range []string{
		`(?m)^# bwc-0001$`,
		`(?m)^tracking\.distance\s+50\s+local\s+->\s+70\s+group/north$`,
		`unchanged, a higher scope sets them: tracking\.max_interval \(by device/bwc-0001\)`,
		`(?m)^# bwc-0002$`,
		`(?m)^tracking\.max_interval\s+\S+\s+local\s+->\s+45s\s+group/north$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("dry run lacks %s", re)
		}
	}
	// Without --devices: membership from the retained state messages'
	// groups (bwc-0002 has never sent a config report).
	code, out, e = fleetRun(t, "config", "push", "--group", "north", "--dry-run", "--json", "--broker", b.URL(), "--fleet", "met", "--sign-key", common[5], f)
	var res dryRunResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.DryRun || len(res.Devices) != 2 {
		t.Fatalf("dry run --json: exit %d %s\n%s", code, e, out)
	}
	for _, m := range obs.Messages() {
		if strings.Contains(m.Topic, "/config/desired") || strings.Contains(m.Topic, "/config/previous") {
			t.Errorf("a dry run published %s", m.Topic)
		}
	}
	if agents["bwc-0002"].Config().Tracking.Distance == 70 {
		t.Fatal("a dry run changed a device")
	}
}

// TestCanaryStops: a group push whose gps.port the canary device's real
// agent refuses (no such serial device) stops after the canary: the
// group's config is never published, the other devices never see it, the
// report names the device and why, and the exit status is 1.
func TestCanaryStops(t *testing.T) {
	b, agents, dir, common := rolloutRig(t, 3)
	obs := b.Observe("kestrel/v1/met/_group/#")
	f := writeFile(t, dir, "port.toml", "[gps]\nport = \"/dev/ttyS9\"\n")
	code, out, e := fleetRun(t, append(append([]string{"config", "push", "--group", "north", "--canary", "1", "--stages", "100%", "--json"}, common...), f)...)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, e)
	var rep pushReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v", err)
	}
	if code != 1 || !rep.Stopped || len(rep.Stages) != 1 || rep.Stages[0].Name != "canary" {
		t.Fatalf("exit %d, stopped %v, stages %+v", code, rep.Stopped, rep.Stages)
	}
	if len(rep.Devices) != 1 || rep.Devices[0].Device != "bwc-0001" || rep.Devices[0].Result != "rejected" ||
		len(rep.Devices[0].Errors) == 0 || !strings.Contains(rep.Devices[0].Errors[0].Path+rep.Devices[0].Errors[0].Error, "gps") {
		t.Fatalf("devices: %+v", rep.Devices)
	}
	if !strings.Contains(e, "stopping the rollout") {
		t.Errorf("stderr does not say it stopped: %s", e)
	}
	if obs.Len() != 0 {
		t.Fatalf("the group config was published: %v", obs.Messages())
	}
	for id, a := range agents {
		if a.Config().GPS.Port == "/dev/ttyS9" {
			t.Fatalf("%s runs the refused port", id)
		}
	}
	// The canary's own device-scope key stayed.
	if agents["bwc-0001"].Config().Tracking.MaxInterval.Duration != 30*time.Second {
		t.Fatal("the canary lost its own device-scope key")
	}
}

// TestStagesProceed: canary, then half, then the rest at group scope; every
// device ends with the group's key from group/north and bwc-0001 keeps its
// own device key at device scope; then rollback restores the group's
// previous content as a new version, and clear empties it.
func TestStagesProceed(t *testing.T) { testStagesProceed(t, broker.StartMochi(t)) }

// TestStagesProceedMosquitto: the same through Debian's mosquitto, whose
// retained-message handling (config/desired, config/previous) is the one
// fleets run.
func TestStagesProceedMosquitto(t *testing.T) { testStagesProceed(t, broker.StartMosquitto(t)) }

func testStagesProceed(t *testing.T, brk *broker.Broker) {
	b, agents, dir, common := rolloutRigOn(t, brk, 3)
	first := writeFile(t, dir, "first.toml", "[tracking]\ndistance = 40.0\n")
	if code, out, e := fleetRun(t, append(append([]string{"config", "push", "--group", "north", "--version", "100"}, common...), first)...); code != 0 {
		t.Fatalf("first push: %d\n%s\n%s", code, out, e)
	}
	f := writeFile(t, dir, "north.toml", "[tracking]\ndistance = 55.0\nmax_interval = \"50s\"\n")
	code, out, e := fleetRun(t, append(append([]string{"config", "push", "--group", "north", "--canary", "1", "--stages", "50%,100%", "--version", "200"}, common...), f)...)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, e)
	if code != 0 {
		t.Fatalf("staged push: exit %d", code)
	}
	for _, re := range []string{
		`(?m)^canary\s+device-scope\s+1\s+0\s+0$`,
		`(?m)^50%\s+device-scope\s+1\s+0\s+0$`,
		`(?m)^100%\s+group/north\s+1\s+0\s+0$`,
		`version 200: applied 3, rejected 0, rolled back 0, no answer 0`,
		`device scopes put back \(version 201\): applied 2 of 2`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s", re)
		}
	}
	for id, a := range agents {
		c := a.Config()
		want := 50 * time.Second
		if id == "bwc-0001" {
			want = 30 * time.Second
		}
		if c.Tracking.Distance != 55 || c.Tracking.MaxInterval.Duration != want {
			t.Errorf("%s: distance %v, max_interval %s", id, c.Tracking.Distance, c.Tracking.MaxInterval)
		}
	}
	// Provenance after the rollout: the group key from the group, not the
	// staged device scope.
	code, out, _ = fleetRun(t, "config", "get", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0002", "--effective", "--wait", "1s")
	if code != 0 || !regexp.MustCompile(`(?m)^tracking\.distance\s+55\s+group/north\s+200$`).MatchString(out) {
		t.Fatalf("effective after rollout:\n%s", out)
	}

	// Rollback: the group's previous content (distance 40, no
	// max_interval) comes back as version 201 or more.
	rb := append(append([]string{"config", "rollback", "--group", "north"}, common...), "--json")
	code, out, e = fleetRun(t, rb...)
	var rep pushReport
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.From != 100 || rep.Version <= 200 {
		t.Fatalf("rollback: exit %d %v from %d version %d\n%s\n%s", code, err, rep.From, rep.Version, out, e)
	}
	for id, a := range agents {
		if c := a.Config(); c.Tracking.Distance != 40 {
			t.Errorf("%s after rollback: distance %v", id, c.Tracking.Distance)
		}
	}
	// clear --json: the group sets nothing any more.
	code, out, e = fleetRun(t, append(append([]string{"config", "clear", "--group", "north"}, common...), "--json")...)
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.Command != "clear" || rep.Counts["applied"] != 3 {
		t.Fatalf("clear: exit %d %v\n%s\n%s", code, err, out, e)
	}
	if agents["bwc-0003"].Config().Tracking.Distance == 40 {
		t.Fatal("clear left the group's key")
	}
}

// TestEmptyGroupAndValidate: a push to a group nobody is in says so and
// exits 1 without publishing; config validate lists every problem.
func TestEmptyGroupAndValidate(t *testing.T) {
	b := broker.StartMochi(t)
	dir := t.TempDir()
	prefix := filepath.Join(dir, "fleet")
	fleetRun(t, "keygen", "--out", prefix)
	obs := b.Observe("kestrel/v1/#")
	f := writeFile(t, dir, "ok.toml", "[tracking]\ndistance = 10.0\n")
	code, _, e := fleetRun(t, "config", "push", "--group", "nobody", "--broker", b.URL(), "--fleet", "met", "--sign-key", prefix+".key", "--discover", "300ms", f)
	if code != 1 || !strings.Contains(e, "no device known in group nobody") || obs.Len() != 0 {
		t.Fatalf("empty group: exit %d, %d published: %s", code, obs.Len(), e)
	}
	bad := writeFile(t, dir, "bad.toml", "[tracking]\nmax_interval = \"-5s\"\ndistance = -3.0\n[privacy]\nmode = \"bogus\"\n")
	code, out, _ := fleetRun(t, "config", "validate", bad)
	for _, k := range []string{"tracking.max_interval", "tracking.distance", "privacy.mode"} {
		if !strings.Contains(out, k) {
			t.Errorf("validate does not list %s:\n%s", k, out)
		}
	}
	if code != 1 {
		t.Fatalf("validate: exit %d", code)
	}
	code, out, _ = fleetRun(t, "config", "validate", "--json", bad)
	var v struct {
		Valid  bool `json:"valid"`
		Errors []struct{ Path, Error string }
	}
	if code != 1 || json.Unmarshal([]byte(out), &v) != nil || v.Valid || len(v.Errors) != 3 {
		t.Fatalf("validate --json: exit %d\n%s", code, out)
	}
	if code, out, _ := fleetRun(t, "config", "validate", f); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("valid file: exit %d %s", code, out)
	}
}

// TestStageStopPutsBack: the canary applies, the next stage has a device
// that never answers: the rollout stops there, the group config is never
// published, and the devices already staged get their own device scope
// back (bwc-0001 its max_interval, bwc-0002 nothing), so no device keeps
// the half-rolled-out change.
func TestStageStopPutsBack(t *testing.T) {
	b, agents, dir, common := rolloutRig(t, 3)
	ghost := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("ghost"))
	ghost.Connect().Wait()
	ghost.Publish("kestrel/v1/met/bwc-0002a/state", 1, true, stateMsg(false, map[string]any{"groups": []any{"north"}})).Wait()
	ghost.Disconnect(0)
	obs := b.Observe("kestrel/v1/met/_group/#")
	f := writeFile(t, dir, "north.toml", "[tracking]\ndistance = 66.0\nmax_interval = \"50s\"\n")
	// Discovery, not --devices: the ghost is a member by its state message.
	args := []string{"config", "push", "--group", "north", "--canary", "1", "--stages", "3", "--max-failures", "0", "--timeout", "2s",
		"--broker", b.URL(), "--fleet", "met", "--sign-key", common[5], f}
	code, out, e := fleetRun(t, args...)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, e)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, re := range []string{
		`(?m)^canary\s+device-scope\s+1\s+0\s+0$`,
		`(?m)^3\s+device-scope\s+2\s+1\s+0$`,
		`(?m)^bwc-0002a\s+no answer`,
		`rollout stopped: stage 3: 1 of 2 device\(s\) failed, at most 0 may`,
		`device scopes put back \(version \d+\): applied 2 of 2`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s", re)
		}
	}
	if obs.Len() != 0 {
		t.Fatal("the group config was published")
	}
	for id, a := range agents {
		c := a.Config()
		want := config.Defaults().Tracking.MaxInterval.Duration
		if id == "bwc-0001" {
			want = 30 * time.Second
		}
		if c.Tracking.Distance == 66 || c.Tracking.MaxInterval.Duration != want {
			t.Errorf("%s kept the stopped change: distance %v, max_interval %s", id, c.Tracking.Distance, c.Tracking.MaxInterval)
		}
	}
}
