package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

// TestDaemonChild is the daemon under test when TestOversizeMessageRSS
// re-executes this binary; it does nothing otherwise.
func TestDaemonChild(t *testing.T) {
	path := os.Getenv("KESTREL_TEST_DAEMON_CONFIG")
	if path == "" {
		t.Skip("only run as the child of TestOversizeMessageRSS")
	}
	os.Exit(dispatch([]string{"run", "--config", path}, stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: os.Stdout, stderr: os.Stderr}))
}

// TestOversizeMessageRSS: `kestrel run` on Debian's mosquitto receives a
// 100 MB message on its command topic (broker credentials are all it
// takes); its peak RSS stays under 32 MiB, because the payload is
// discarded as it is read (transport/mqtt/limit.go) instead of being
// buffered whole by paho.
func TestOversizeMessageRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 100 MB through a broker")
	}
	b := broker.StartMosquitto(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kestrel.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[device]
id = "car-17"
fleet = "test"
[broker]
urls = [%q]
[spool]
dir = %q
max_bytes = 16777216
[remote]
state_file = %q
require_signed = false
[hooks]
socket = ""
link_period = "0s"
`, b.URL(), filepath.Join(dir, "spool"), filepath.Join(dir, "remote.json"))), 0o600)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDaemonChild$")
	cmd.Env = append(os.Environ(), "KESTREL_TEST_DAEMON_CONFIG="+cfg)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	waitLine := func(sub string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("daemon exited before logging %q", sub)
				}
				if strings.Contains(l, sub) {
					return
				}
			case <-deadline:
				t.Fatalf("daemon never logged %q", sub)
			}
		}
	}
	waitLine("mqtt connected")
	before := peakRSS(t, cmd.Process.Pid)

	cl := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("attacker").SetWriteTimeout(60 * time.Second))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cl.Disconnect(0)
	junk := bytes.Repeat([]byte("x"), 100<<20)
	if tok := cl.Publish("kestrel/v1/test/car-17/cmd", 1, false, junk); !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	junk = nil
	waitLine("inbound message over the size limit")
	after := peakRSS(t, cmd.Process.Pid)
	t.Logf("daemon peak RSS: %.1f MiB before, %.1f MiB after a 100 MB message", float64(before)/(1<<20), float64(after)/(1<<20))
	if after >= 32<<20 {
		t.Fatalf("peak RSS %d bytes after a 100 MB message, want under 32 MiB", after)
	}
}

// peakRSS is the process's VmHWM in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
