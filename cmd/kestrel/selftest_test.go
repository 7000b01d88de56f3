package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/selftest"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/hwtest/footprint"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
)

func selftestRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(append([]string{"selftest"}, args...), stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
	t.Logf("exit %d\n%s%s", code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// selftestConfig writes a config for a vehicle fitted with a simulated GPS
// (a real track, retimed to now), LTE modem and sensors, and a broker.
func selftestConfig(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	track, err := os.ReadFile("../../agent/selftest/testdata/visnjan-car.nmea")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := gpssim.New(gpssim.Config{Log: footprint.Retime(track, time.Now(), time.Second), Speed: 1, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	go sim.Run(ctx)
	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tree, err := fakesysfs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := tree.AddAccel("lis3dh", "0.009806")
	tree.SetAccel(dir, 0, 0, 1000)
	tree.AddThermalZone("cpu-thermal", 45000)
	b := broker.StartMochi(t)

	tmp := t.TempDir()
	path := filepath.Join(tmp, "kestrel.toml")
	conf := fmt.Sprintf(`[device]
id = "car-17"
fleet = "met"
[broker]
urls = [%q]
[spool]
dir = %q
[gps]
port = %q
baud = 9600
[radio]
port = %q
profile = "lte"
[sensors]
sysfs_root = %q
accel_rate = 50.0
[hooks]
socket = %q
[status]
socket = %q
[remote]
state_file = %q
`, b.URL(), filepath.Join(tmp, "spool"), sim.Path(), m.Path(), tree.Root, filepath.Join(tmp, "hooks.sock"),
		filepath.Join(tmp, "control.sock"), filepath.Join(tmp, "remote.json"))
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSelftestCommand(t *testing.T) {
	path := selftestConfig(t)

	code, out, _ := selftestRun(t, "--config", path)
	if code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, "PART") {
		t.Fatalf("against the simulators: exit %d, want 0 and no FAIL", code)
	}
	for _, part := range []string{"gps", "radio", "accel", "broker", "clock", "spool"} {
		if !strings.Contains(out, "\n"+part+" ") || !rowHas(out, part, "PASS") {
			t.Errorf("no PASS row for %s", part)
		}
	}

	// A wrong GPS port: exit 1, and the row says what to do.
	code, out, _ = selftestRun(t, "--config", path, "--set", "gps.port=/dev/ttyUSB9")
	if code != 1 || !rowHas(out, "gps", "FAIL") || !strings.Contains(out, "ls -l /dev/serial/by-id/") {
		t.Fatalf("wrong GPS port: exit %d, want 1 with a FAIL and the by-id hint", code)
	}

	// JSON for tools, with the same verdict.
	code, out, _ = selftestRun(t, "--config", path, "--json", "--set", "gps.port=/dev/ttyUSB9")
	var rep selftest.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Status != selftest.Fail {
		t.Fatalf("--json: exit %d, %v", code, err)
	}
	if g, ok := rep.Find("gps"); !ok || g.Status != selftest.Fail || g.Hint == "" {
		t.Errorf("--json gps row: %+v", g)
	}
}

func TestSelftestInvalidConfigStillChecks(t *testing.T) {
	tmp := t.TempDir()
	path := filepath.Join(tmp, "kestrel.toml")
	// No device identity: the config row fails, the parts are still
	// checked.
	os.WriteFile(path, []byte(fmt.Sprintf("[spool]\ndir = %q\n[hooks]\nsocket = %q\n", filepath.Join(tmp, "spool"), filepath.Join(tmp, "h.sock"))), 0o600)
	code, out, _ := selftestRun(t, "--config", path)
	if code != 1 || !rowHas(out, "config", "FAIL") || !strings.Contains(out, "device.id") || !rowHas(out, "spool", "PASS") {
		t.Fatalf("exit %d", code)
	}
}

func TestSelftestUsage(t *testing.T) {
	code, _, errOut := selftestRun(t, "--config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 2 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("missing config: exit %d, %q", code, errOut)
	}
	if code, _, _ := selftestRun(t); code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
	if code, _, errOut := selftestRun(t, "-h"); code != 0 || !strings.Contains(errOut, "kestrel selftest --config FILE") {
		t.Errorf("-h: exit %d", code)
	}
}

// rowHas reports whether the table row of part shows result.
func rowHas(table, part, result string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == part && f[1] == result {
			return true
		}
	}
	return false
}

// TestVersionUsage: version -h prints its usage, and an argument is a
// usage error, as every command's.
func TestVersionUsage(t *testing.T) {
	var out, errb bytes.Buffer
	s := stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	if code := dispatch([]string{"version", "-h"}, s); code != 0 || !strings.Contains(errb.String(), "usage: kestrel version") || out.Len() != 0 {
		t.Errorf("version -h: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if code := dispatch([]string{"version", "extra"}, s); code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}
