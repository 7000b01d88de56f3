package ota

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/agent/update"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

const (
	fleetName = "ota"
	deviceID  = "cam-7"
)

func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// Build builds pkg (./cmd/kestrel by default) with main.version set, for
// goarch (GOARM=7 for arm), with extra build tags.
func Build(t testing.TB, out, pkg, version, goarch string, tags ...string) string {
	t.Helper()
	if pkg == "" {
		pkg = "./cmd/kestrel"
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=" + version, "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" {
		cmd.Env = append(cmd.Env, "GOARM=7")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s %s for %s: %v\n%s", pkg, version, goarch, err, b)
	}
	return out
}

// Env is one device under test and its fleet.
type Env struct {
	t       testing.TB
	Dir     string // the device's state directory
	Broker  *broker.Broker
	Config  config.Config
	cfgPath string
	// Launcher is the package's binary (/usr/bin/kestrel on a device).
	Launcher []string
	ExtraEnv []string
	// StartEnv, when set, adds environment for the supervisor's nth
	// start (1-based).
	StartEnv func(start int) []string
	// AfterExit, when set, sees each exit before the restart.
	AfterExit func(start int, err error)
	Release   ed25519.PrivateKey // trusted with the release role
	Other     ed25519.PrivateKey // trusted for config and commands only
	Stranger  ed25519.PrivateKey // not trusted

	reports *broker.Observer
	audits  *broker.Observer
	data    *broker.Observer

	mu      sync.Mutex
	proc    *exec.Cmd
	stopped bool
	starts  int
	exits   []string
	done    chan struct{}
	logs    *os.File
}

// New starts a mochi broker and writes the device's config; launcher is
// the command that runs the package binary (a qemu-arm prefix for arm).
func New(t testing.TB, launcher []string, edit func(*config.Config)) *Env {
	t.Helper()
	e := &Env{t: t, Dir: t.TempDir(), Launcher: launcher}
	e.Broker = broker.StartMochi(t)
	e.reports = e.Broker.Observe(fleet.DeviceTopic(fleetName, deviceID, fleet.ChannelUpdateReported))
	e.audits = e.Broker.Observe(fleet.DeviceTopic(fleetName, deviceID, fleet.ChannelAudit))
	e.data = e.Broker.Observe(fleet.DeviceTopic(fleetName, deviceID, "+"))
	for _, k := range []*ed25519.PrivateKey{&e.Release, &e.Other, &e.Stranger} {
		_, *k, _ = ed25519.GenerateKey(rand.Reader)
	}
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = deviceID, fleetName
	c.Broker.URLs = []string{e.Broker.URL()}
	c.Broker.BatchAge = config.D(300 * time.Millisecond)
	c.Spool.Dir = filepath.Join(e.Dir, "spool")
	c.Remote.StateFile = filepath.Join(e.Dir, "remote.json")
	c.Remote.TrustedKeys = []string{
		"release:" + fleet.EncodePublicKey(e.Release.Public().(ed25519.PublicKey)),
		"config+commands:" + fleet.EncodePublicKey(e.Other.Public().(ed25519.PublicKey)),
	}
	c.Hooks.Socket = filepath.Join(e.Dir, "events.sock")
	c.Hooks.AllowUIDs = []int{os.Getuid()}
	c.Hooks.LinkPeriod = config.D(0)
	c.Status.Socket = filepath.Join(e.Dir, "control.sock")
	c.Sensors.BatteryPeriod = config.D(0)
	c.Sensors.ThermalPeriod = config.D(0)
	c.Update.HealthTimeout = config.D(10 * time.Second)
	c.Update.Rate = 64 << 20 // loopback: as fast as the chunk round trips go
	if edit != nil {
		edit(&c)
	}
	e.Config = c
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		t.Fatal(err)
	}
	e.cfgPath = filepath.Join(e.Dir, "kestrel.toml")
	if err := os.WriteFile(e.cfgPath, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.logs = logs
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			if len(b) > 12000 {
				b = b[len(b)-12000:]
			}
			t.Logf("agent log (tail):\n%s", b)
		}
		logs.Close()
	})
	return e
}

// Start runs the launcher under a restart-always supervisor, as the
// kestrel.service unit does (Restart=always, RestartSec).
func (e *Env) Start() {
	e.mu.Lock()
	e.stopped = false
	e.done = make(chan struct{})
	done := e.done
	e.mu.Unlock()
	go func() {
		defer close(done)
		for {
			e.mu.Lock()
			if e.stopped {
				e.mu.Unlock()
				return
			}
			args := append(append([]string{}, e.Launcher[1:]...), "run", "--config", e.cfgPath)
			cmd := exec.Command(e.Launcher[0], args...)
			cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), e.ExtraEnv...)
			if e.StartEnv != nil {
				cmd.Env = append(cmd.Env, e.StartEnv(e.starts+1)...)
			}
			cmd.Stdout, cmd.Stderr = e.logs, e.logs
			if err := cmd.Start(); err != nil {
				e.mu.Unlock()
				e.t.Errorf("start: %v", err)
				return
			}
			e.proc = cmd
			e.starts++
			e.mu.Unlock()
			err := cmd.Wait()
			if e.AfterExit != nil {
				e.AfterExit(e.Starts(), err)
			}
			e.mu.Lock()
			e.exits = append(e.exits, fmt.Sprint(err))
			e.proc = nil
			stopped := e.stopped
			e.mu.Unlock()
			if stopped {
				return
			}
			time.Sleep(300 * time.Millisecond) // RestartSec
		}
	}()
}

// Kill SIGKILLs the running process (the supervisor restarts it).
func (e *Env) Kill() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil && e.proc.Process != nil {
		e.proc.Process.Signal(syscall.SIGKILL)
	}
}

// Stop stops the supervisor and the agent (SIGTERM, then SIGKILL).
func (e *Env) Stop() {
	e.mu.Lock()
	e.stopped = true
	p, done := e.proc, e.done
	e.mu.Unlock()
	if p != nil && p.Process != nil {
		p.Process.Signal(syscall.SIGTERM)
		t := time.AfterFunc(10*time.Second, func() { p.Process.Signal(syscall.SIGKILL) })
		defer t.Stop()
	}
	if done != nil {
		<-done
	}
}

// Starts is how many times the supervisor started the launcher.
func (e *Env) Starts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts
}

// Exe is the binary the running agent process executes (after the
// launcher's exec), or "" when none runs.
func (e *Env) Exe() string {
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	if p == nil || p.Process == nil {
		return ""
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Process.Pid))
	return exe
}

// Cmdline is the running process's argv (under qemu-arm: qemu's).
func (e *Env) Cmdline() string {
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	if p == nil || p.Process == nil {
		return ""
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Process.Pid))
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// Manifest describes a release of bin for e's device.
func (e *Env) Manifest(bin []byte, seq uint64, version string, p fleet.Platform) fleet.Release {
	sum := sha256.Sum256(bin)
	now := time.Now()
	return fleet.Release{Fleet: fleetName, Scope: "device/" + deviceID, Version: version, Seq: seq,
		GOOS: p.GOOS, GOARCH: p.GOARCH, GOARM: p.GOARM, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(bin)),
		ChunkSize: fleet.DefaultChunkSize, SpoolFormats: []int{spool.Format},
		Issued: now.UnixMilli(), Expires: now.Add(24 * time.Hour).UnixMilli()}
}

// PublishChunks retains bin's chunks on their topics.
func (e *Env) PublishChunks(bin []byte, chunkSize int) {
	e.t.Helper()
	sum := sha256.Sum256(bin)
	sha := hex.EncodeToString(sum[:])
	srv := e.Broker.Server()
	for i := 0; i < fleet.Chunks(int64(len(bin)), chunkSize); i++ {
		end := min((i+1)*chunkSize, len(bin))
		if err := srv.Publish(fleet.ReleaseChunkTopic(fleetName, sha, i), bin[i*chunkSize:end], true, 1); err != nil {
			e.t.Fatal(err)
		}
	}
}

// PublishManifest signs r with key and retains it on its update topic.
func (e *Env) PublishManifest(key ed25519.PrivateKey, r fleet.Release) []byte {
	e.t.Helper()
	b, err := fleet.SignRelease([]ed25519.PrivateKey{key}, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.Broker.Server().Publish(r.Target().UpdateTopic(), b, true, 1); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// WaitReport waits for an update/reported message that done accepts and
// returns it.
func (e *Env) WaitReport(timeout time.Duration, what string, done func(*fleet.UpdateReport) bool) *fleet.UpdateReport {
	e.t.Helper()
	var got *fleet.UpdateReport
	ok := e.reports.Wait(timeout, func(ms []broker.Message) bool {
		for _, m := range ms {
			r, err := fleet.DecodeUpdateReport(m.Payload)
			if err == nil && done(r) {
				got = r
				return true
			}
		}
		return false
	})
	if !ok {
		var seen []string
		for _, m := range e.reports.Messages() {
			seen = append(seen, string(m.Payload))
		}
		e.t.Fatalf("no update report %s within %s; reports:\n%s", what, timeout, strings.Join(seen, "\n"))
	}
	return got
}

// WaitAudit waits for an audit entry of kind update that done accepts.
func (e *Env) WaitAudit(timeout time.Duration, what string, done func(*fleet.AuditEntry) bool) *fleet.AuditEntry {
	e.t.Helper()
	var got *fleet.AuditEntry
	ok := e.audits.Wait(timeout, func(ms []broker.Message) bool {
		for _, m := range ms {
			a, err := fleet.DecodeAudit(m.Payload)
			if err == nil && a.Kind == "update" && done(a) {
				got = a
				return true
			}
		}
		return false
	})
	if !ok {
		var seen []string
		for _, m := range e.audits.Messages() {
			seen = append(seen, string(m.Payload))
		}
		e.t.Fatalf("no audit entry %s within %s; audit:\n%s", what, timeout, strings.Join(seen, "\n"))
	}
	return got
}

// CheckRecords stops the agent and checks the spool's guarantee across
// everything that happened: after deduplication on (boot, seq) no
// sequence gap within a boot among the records the broker accepted, and
// nothing left in the spool (every record made durable was delivered).
// It returns how many records arrived.
func (e *Env) CheckRecords() int {
	e.t.Helper()
	e.Stop()
	p := platform.Collect(nil)
	for _, m := range e.data.Messages() {
		if strings.HasSuffix(m.Topic, "/telemetry") || strings.HasSuffix(m.Topic, "/events") {
			p.Add(m.Topic, m.Payload, m.At)
		}
	}
	if errs := p.Errors(); len(errs) > 0 {
		e.t.Errorf("%d payloads did not decode, first: %v", len(errs), errs[0])
	}
	if gaps := p.Gaps(); len(gaps) > 0 {
		e.t.Errorf("sequence gaps after deduplication: %v", gaps)
	}
	sp, err := spool.Open(e.Config.Spool.Dir, spool.Options{}, nil)
	if err != nil {
		e.t.Errorf("reopen spool: %v", err)
	} else {
		if n := sp.Metrics().Records; n != 0 {
			e.t.Errorf("%d records left in the spool: made durable but never delivered", n)
		}
		sp.Close()
	}
	return len(p.Unique())
}

// UpdateState reads the device's update.json.
func (e *Env) UpdateState() update.State {
	var st update.State
	b, err := os.ReadFile(filepath.Join(e.Dir, update.StateFile))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	return st
}

// LogContains says whether the agent's log has s.
func (e *Env) LogContains(s string) bool {
	b, _ := os.ReadFile(e.logs.Name())
	return bytes.Contains(b, []byte(s))
}

// Log is the agent's log so far.
func (e *Env) Log() string {
	b, _ := os.ReadFile(e.logs.Name())
	return string(b)
}

// WaitFor polls cond.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
