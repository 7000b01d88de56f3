package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/fleetctl"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

// realDevice runs the real agent with its fleet controller on the broker,
// wired as kestrel run wires them.
func realDevice(t *testing.T, url, id, pub string, groups []string) *agent.Agent {
	t.Helper()
	return realDeviceWith(t, url, id, groups, func(c *config.Config) { c.Remote.TrustedKeys = []string{pub} })
}

// realDeviceWith is realDevice with the local config adjusted by tune.
func realDeviceWith(t *testing.T, url, id string, groups []string, tune func(*config.Config)) *agent.Agent {
	t.Helper()
	dir := t.TempDir()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet, c.Device.Group = id, "met", groups
	c.Broker.URLs = []string{url}
	c.Broker.BatchAge = config.D(100 * time.Millisecond)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Hooks.Socket = ""
	tune(&c)
	log := slog.New(slog.DiscardHandler)
	ctl, err := fleetctl.NewManager(fleetctl.Options{Current: c, Logger: log, CheckEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(ctl.StartConfig(), agent.Options{Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetHandlers(nil, a.Policy())
	ctl.SetSigner(a.Identity())
	if err := ctl.Attach(a, a.Messenger()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { ctl.Run(ctx); done <- struct{}{} }()
	go func() { a.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done; a.Close() })
	return a
}

// layerRig: a broker, a fleet key and one real device in group north; it
// returns the flags every push needs.
func layerRig(t *testing.T) (b *broker.Broker, a *agent.Agent, dir, prefix string, common []string) {
	t.Helper()
	b = broker.StartMochi(t)
	dir = t.TempDir()
	prefix = filepath.Join(dir, "fleet")
	if code, _, e := fleetRun(t, "keygen", "--out", prefix); code != 0 {
		t.Fatal(e)
	}
	pubText, _ := os.ReadFile(prefix + ".pub")
	a = realDevice(t, b.URL(), "bwc-0001", strings.TrimSpace(string(pubText)), []string{"north"})
	common = []string{"--broker", b.URL(), "--fleet", "met", "--sign-key", prefix + ".key", "--timeout", "10s", "--devices", "bwc-0001"}
	return b, a, dir, prefix, common
}

// TestScopesLayer: with the real agent and a real broker, a device push,
// then a group push, then a fleet push each keep the keys the others set,
// and config get --effective shows where each came from. Clearing the
// group scope drops only the group's keys.
func TestScopesLayer(t *testing.T) {
	b, a, dir, prefix, common := layerRig(t)
	push := func(target []string, version, body string) {
		t.Helper()
		f := filepath.Join(dir, version+".toml")
		os.WriteFile(f, []byte(body), 0o644)
		args := append(append(append([]string{"config", "push"}, target...), common...), "--version", version, f)
		if code, out, e := fleetRun(t, args...); code != 0 {
			t.Fatalf("push %v: exit %d\n%s\n%s", target, code, out, e)
		}
	}
	push([]string{"--device", "bwc-0001"}, "10", "[tracking]\nmax_interval = \"30s\"\n")
	push([]string{"--group", "north"}, "20", "[privacy]\nmode = \"coarse\"\n")
	push([]string{"--all"}, "30", "[tracking]\ndistance = 80.0\n")

	c := a.Config()
	if c.Tracking.MaxInterval.Duration != 30*time.Second || c.Privacy.Mode != "coarse" || c.Tracking.Distance != 80 {
		t.Fatalf("running: max_interval %s, privacy %s, distance %v", c.Tracking.MaxInterval, c.Privacy.Mode, c.Tracking.Distance)
	}
	if tr, pr := a.Policy().Config(); tr.MaxInterval.Duration != 30*time.Second || pr.Mode != "coarse" || tr.Distance != 80 {
		t.Fatalf("policy runs max_interval %s, privacy %s, distance %v", tr.MaxInterval, pr.Mode, tr.Distance)
	}
	code, out, e := fleetRun(t, "config", "get", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0001", "--effective", "--wait", "1s")
	if code != 0 {
		t.Fatalf("get --effective: %d %s", code, e)
	}
	for _, re := range []string{
		`(?m)^tracking\.max_interval\s+30s\s+device/bwc-0001\s+10$`,
		`(?m)^privacy\.mode\s+coarse\s+group/north\s+20$`,
		`(?m)^tracking\.distance\s+80\s+all\s+30$`,
		`(?m)^gps\.baud\s+0\s+local\s+-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("effective config lacks %s:\n%s", re, out)
		}
	}

	// Clearing the group is signed and versioned; the others stay.
	args := append(append([]string{"config", "clear", "--group", "north"}, common...), "--version", "21")
	if code, out, e := fleetRun(t, args...); code != 0 {
		t.Fatalf("clear: exit %d\n%s\n%s", code, out, e)
	}
	c = a.Config()
	if c.Privacy.Mode != "off" || c.Tracking.MaxInterval.Duration != 30*time.Second || c.Tracking.Distance != 80 {
		t.Fatalf("after clear: privacy %s, max_interval %s, distance %v", c.Privacy.Mode, c.Tracking.MaxInterval, c.Tracking.Distance)
	}
	// An older group version is refused, per scope.
	f := filepath.Join(dir, "old.toml")
	os.WriteFile(f, []byte("[privacy]\nmode = \"pause\"\n"), 0o644)
	args = append(append([]string{"config", "push", "--group", "north"}, common...), "--version", "15", f)
	if code, out, _ := fleetRun(t, args...); code != 1 || !strings.Contains(out, "rejected") {
		t.Fatalf("stale group version: exit %d\n%s", code, out)
	}
	// A group nobody is in: said so, nothing published, exit 1.
	code, _, e = fleetRun(t, "config", "push", "--group", "nobody", "--broker", b.URL(), "--fleet", "met", "--sign-key", prefix+".key", "--discover", "500ms", f)
	if code != 1 || !strings.Contains(e, "no device known in group nobody") {
		t.Fatalf("empty group: exit %d: %s", code, e)
	}
}

// TestPrivacyLock: privacy locked at fleet scope cannot be weakened by a
// group or device config; strengthening it is allowed.
func TestPrivacyLock(t *testing.T) {
	_, a, dir, _, common := layerRig(t)
	push := func(target []string, version, body string) (int, string) {
		t.Helper()
		f := filepath.Join(dir, version+".toml")
		os.WriteFile(f, []byte(body), 0o644)
		code, out, _ := fleetRun(t, append(append(append([]string{"config", "push"}, target...), common...), "--version", version, f)...)
		return code, out
	}
	if code, out := push([]string{"--all"}, "1", "[privacy]\nmode = \"coarse\"\nlocked = true\n"); code != 0 {
		t.Fatalf("fleet lock: %s", out)
	}
	code, out := push([]string{"--device", "bwc-0001"}, "2", "[privacy]\nmode = \"off\"\n")
	if code != 1 || !strings.Contains(out, "privacy.mode: privacy is locked") {
		t.Fatalf("weakening at device scope: exit %d\n%s", code, out)
	}
	if a.Config().Privacy.Mode != "coarse" {
		t.Fatal("a locked privacy mode was weakened")
	}
	if code, out := push([]string{"--group", "north"}, "3", "[privacy]\nmode = \"pause\"\n"); code != 0 {
		t.Fatalf("strengthening at group scope: %s", out)
	}
	if a.Config().Privacy.Mode != "pause" {
		t.Fatal("strengthening not applied")
	}
	// The off-duty triggers are locked too: a fleet schedule and zone, then
	// a device config that drops the zone and the schedule entry is refused
	// whole, naming both; one that adds a zone is applied.
	zone := func(name, action string) string {
		return "[[privacy.zones]]\nname = \"" + name + "\"\naction = \"" + action + "\"\n" +
			"polygon = [[51.5, -0.1], [51.5, -0.09], [51.51, -0.09]]\n"
	}
	fleet := "[privacy]\nmode = \"coarse\"\nlocked = true\nschedule = [\"Sat,Sun 00:00-24:00\"]\n" + zone("hospital", "drop")
	if code, out := push([]string{"--all"}, "4", fleet); code != 0 {
		t.Fatalf("fleet triggers: %s", out)
	}
	code, out = push([]string{"--device", "bwc-0001"}, "5", "[privacy]\nschedule = []\nzones = []\n")
	if code != 1 || !strings.Contains(out, "privacy.schedule") || !strings.Contains(out, "privacy.zones") {
		t.Fatalf("weakening the triggers at device scope: exit %d\n%s", code, out)
	}
	if p := a.Config().Privacy; len(p.Zones) != 1 || len(p.Schedule) != 1 {
		t.Fatalf("locked triggers were weakened: %+v", p)
	}
	code, out = push([]string{"--device", "bwc-0001"}, "6", "[privacy]\n"+zone("hospital", "drop")+zone("home", "coarse"))
	if code != 0 {
		t.Fatalf("adding a zone at device scope: exit %d\n%s", code, out)
	}
	if p := a.Config().Privacy; len(p.Zones) != 2 {
		t.Fatalf("added zone not applied: %+v", p.Zones)
	}
}
