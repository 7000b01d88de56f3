package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kestrel-edge/kestrel/agent/config"
)

func configRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(append([]string{"config"}, args...), stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

func TestConfigDefaultsValidate(t *testing.T) {
	code, out, _ := configRun(t, "defaults")
	if code != 0 || !strings.Contains(out, "[tracking]") {
		t.Fatalf("defaults: %d", code)
	}
	path := filepath.Join(t.TempDir(), "kestrel.toml")
	os.WriteFile(path, []byte(out), 0o600)
	// The template lacks only the device's identity.
	code, out, _ = configRun(t, "validate", path)
	if code != 1 || !strings.Contains(out, "device.id: ") || !strings.Contains(out, "device.fleet: ") {
		t.Fatalf("validate template: %d %s", code, out)
	}
	code, out, _ = configRun(t, "validate", path, "--set", "device.id=bwc-1", "--set", "device.fleet=met")
	if code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("validate with identity: %d %s", code, out)
	}
	bad := strings.Replace(string(mustRead(t, path)), "baud = 0", "baud = 9601\nparity = \"none\"", 1)
	os.WriteFile(path, []byte(bad), 0o600)
	code, out, _ = configRun(t, "validate", path)
	if code != 1 || !strings.Contains(out, "gps.parity: unknown key") {
		t.Fatalf("unknown key: %d %s", code, out)
	}
	code, out, _ = configRun(t, "show", "--set", "device.id=a", "--set", "device.fleet=b", "--set", "gps.baud=9600")
	if code != 0 {
		t.Fatalf("show: %d", code)
	}
	c, err := config.Parse([]byte(out))
	if err != nil || c.GPS.Baud != 9600 || c.Device.ID != "a" {
		t.Fatalf("show output does not parse back: %v", err)
	}
	if code, _, _ := configRun(t, "validate"); code != 2 {
		t.Fatalf("validate without FILE: exit %d, want 2", code)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMutualTLSRequiredByDefault: outside demo, kestrel config validate and
// kestrel run refuse a broker that is not on loopback without mutual TLS,
// naming the keys to set and the switch that waives it.
func TestMutualTLSRequiredByDefault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kestrel.toml")
	os.WriteFile(path, config.DefaultsTOML(), 0o600)
	sets := []string{"--set", "device.id=bwc-1", "--set", "device.fleet=met", "--set", "broker.urls=tls://mqtt.example:8883",
		"--set", "spool.dir=" + filepath.Join(dir, "spool"), "--set", "remote.state_file=" + filepath.Join(dir, "remote.json")}
	code, out, _ := configRun(t, append([]string{"validate", path}, sets...)...)
	for _, w := range []string{"broker.ca_file", "broker.cert_file", "broker.key_file", "broker.require_client_cert = false"} {
		if code != 1 || !strings.Contains(out, w) {
			t.Fatalf("validate without a client certificate: exit %d, output does not name %s:\n%s", code, w, out)
		}
	}
	var o, e bytes.Buffer
	code = dispatch(append([]string{"run", "--config", path}, sets...), stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &o, stderr: &e})
	if code != exConfig || !strings.Contains(e.String(), "broker.require_client_cert") {
		t.Fatalf("run without a client certificate: exit %d, want %d naming broker.require_client_cert:\n%s", code, exConfig, e.String())
	}
	code, out, _ = configRun(t, append([]string{"validate", path, "--set", "broker.require_client_cert=false"}, sets...)...)
	if code != 0 {
		t.Fatalf("validate with broker.require_client_cert = false: exit %d\n%s", code, out)
	}
}

// TestRunExitsConfigOnSessionOptionError: a config that validates but whose
// broker settings the session cannot use (here a CA file that is not
// there) ends `kestrel run` with 78 (EX_CONFIG), which the unit's
// RestartPreventExitStatus keeps systemd from restarting, not 1.
func TestRunExitsConfigOnSessionOptionError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kestrel.toml")
	os.WriteFile(path, config.DefaultsTOML(), 0o600)
	sets := []string{"--set", "device.id=bwc-1", "--set", "device.fleet=met", "--set", "broker.urls=tls://127.0.0.1:8883",
		"--set", "broker.ca_file=" + filepath.Join(dir, "missing-ca.pem"),
		"--set", "spool.dir=" + filepath.Join(dir, "spool"), "--set", "remote.state_file=" + filepath.Join(dir, "remote.json"),
		"--set", "status.socket=" + filepath.Join(dir, "status.sock")}
	if code, out, _ := configRun(t, append([]string{"validate", path}, sets...)...); code != 0 {
		t.Fatalf("validate: exit %d\n%s", code, out)
	}
	var o, e bytes.Buffer
	code := dispatch(append([]string{"run", "--config", path}, sets...), stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &o, stderr: &e})
	if code != exConfig || !strings.Contains(e.String(), "missing-ca.pem") {
		t.Fatalf("run with an unreadable broker CA: exit %d, want %d naming the file:\n%s", code, exConfig, e.String())
	}
}
