// Package scenario is the end-to-end harness: a real broker (mosquitto, or
// mochi in process), the real kestrel binary (or the linux/arm one under
// qemu-arm), a GPS receiver replaying a real track over a pseudo-terminal,
// an AT modem simulator and the firmware event socket, with the platform's
// view decoded from every message the broker accepted.
//
// Every scenario ends with Check: after deduplication on (device, boot,
// seq) there is no sequence gap within any boot, the spool is empty (so
// every record made durable was delivered), and every position equals a
// fix of the source track within DESIGN's tolerances.
package scenario

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/fakesysfs"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Binary builds the kestrel command for goarch (and GOARM=7 for "arm")
// into dir and returns the command prefix that runs it: qemu-arm for arm.
func Binary(dir, goarch string) ([]string, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "kestrel-"+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/kestrel")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" {
		cmd.Env = append(cmd.Env, "GOARM=7")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build kestrel for %s: %v\n%s", goarch, err, b)
	}
	if goarch == runtime.GOARCH {
		return []string{out}, nil
	}
	emu := map[string]string{"arm": "qemu-arm", "arm64": "qemu-aarch64"}[goarch]
	path, err := exec.LookPath(emu)
	if err != nil {
		return nil, fmt.Errorf("%s not installed (Debian qemu-user): %w", emu, err)
	}
	return []string{path, out}, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Options shape one scenario's world.
type Options struct {
	Command []string // from Binary
	Track   []byte   // NMEA to replay
	Fixes   []byte   // the track's fixes in `nmea decode` JSON lines
	Speed   float64  // receiver cycles per second
	Loop    bool
	// Mochi uses the in-process broker instead of mosquitto.
	Mochi bool
	// Broker options for the broker the scenario starts (broker.WithTLS).
	Broker []broker.Option
	// Radio, when set, attaches an AT modem simulator of this profile.
	Radio kestrel.RadioProfile
	// Sensors adds a fake sysfs tree with a battery and a thermal zone.
	Sensors bool
	// Edit changes the config before it is written.
	Edit func(*config.Config)
}

// Env is one scenario's world.
type Env struct {
	t      testing.TB
	opts   Options
	Dir    string
	Broker *broker.Broker
	GPS    *gpssim.Sim
	Modem  *atmodem.Modem
	Sysfs  *fakesysfs.Tree
	Config config.Config
	// ConfigPath is the TOML file the agent reads.
	ConfigPath string

	data   *broker.Observer
	states *broker.Observer
	fixes  map[int64]kestrel.Position

	mu    sync.Mutex
	proc  *exec.Cmd
	exit  chan error
	logs  *os.File
	boots int
}

// New builds the world; Start starts the agent.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Speed == 0 {
		o.Speed = 10
	}
	e := &Env{t: t, opts: o, Dir: t.TempDir(), fixes: map[int64]kestrel.Position{}}
	if o.Mochi {
		e.Broker = broker.StartMochi(t, o.Broker...)
	} else {
		e.Broker = broker.StartMosquitto(t, o.Broker...)
	}
	e.data = e.Broker.Observe("kestrel/v1/+/+/+")
	sc := bufio.NewScanner(bytes.NewReader(o.Fixes))
	for sc.Scan() {
		tm, p, err := wire.ParseFixJSON(sc.Bytes())
		if err != nil {
			t.Fatalf("fixes: %v", err)
		}
		e.fixes[tm] = p
	}
	gps, err := gpssim.New(gpssim.Config{Log: o.Track, Baud: 9600, Speed: o.Speed, Loop: o.Loop, Link: gpssim.LinkIn(e.Dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gps.Close() })
	e.GPS = gps

	c := config.Defaults()
	c.Device.ID = "car-17"
	c.Device.Fleet = "scenario"
	c.Broker.URLs = []string{e.Broker.URL()}
	c.Broker.BatchAge = config.D(300 * time.Millisecond)
	c.Spool.Dir = filepath.Join(e.Dir, "spool")
	c.Spool.SyncInterval = config.D(200 * time.Millisecond)
	c.Remote.StateFile = filepath.Join(e.Dir, "remote.json")
	c.Remote.RequireSigned = false
	c.GPS.Port = gps.Path()
	c.GPS.Baud = 9600
	c.Tracking = config.Tracking{}
	c.Hooks.Socket = filepath.Join(e.Dir, "events.sock")
	c.Status.Socket = filepath.Join(e.Dir, "control.sock")
	c.Hooks.AllowUIDs = []int{os.Getuid()}
	c.Hooks.LinkPeriod = config.D(0)
	c.Sensors.BatteryPeriod = config.D(0)
	c.Sensors.ThermalPeriod = config.D(0)
	if o.Radio != 0 {
		m, err := atmodem.New(o.Radio)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		e.Modem = m
		c.Radio.Port = m.Path()
		c.Radio.Profile = o.Radio.String()
		c.Radio.Poll = config.D(time.Second)
	}
	if o.Sensors {
		tree, err := fakesysfs.New(filepath.Join(e.Dir, "sys"))
		if err != nil {
			t.Fatal(err)
		}
		temp := 312
		if err := tree.AddBattery("BAT0", fakesysfs.Battery{Capacity: 81, Status: "Discharging", VoltageUV: 3950000, TempDeciC: &temp}); err != nil {
			t.Fatal(err)
		}
		if _, err := tree.AddThermalZone("cpu-thermal", 48500); err != nil {
			t.Fatal(err)
		}
		e.Sysfs = tree
		c.Sensors.SysfsRoot = filepath.Join(e.Dir, "sys")
		c.Sensors.BatteryPeriod = config.D(time.Second)
		c.Sensors.ThermalPeriod = config.D(time.Second)
	}
	if o.Edit != nil {
		o.Edit(&c)
	}
	e.Config = c
	e.ConfigPath = filepath.Join(e.Dir, "kestrel.toml")
	e.WriteConfig(c)
	logs, err := os.Create(filepath.Join(e.Dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.logs = logs
	t.Cleanup(func() {
		e.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("agent log:\n%s", tail(b, 60))
		}
		logs.Close()
	})
	return e
}

// WriteConfig writes c as the agent's config file (0600: it may name keys).
func (e *Env) WriteConfig(c config.Config) {
	e.t.Helper()
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		e.t.Fatalf("encode config: %v", err)
	}
	if err := os.WriteFile(e.ConfigPath, b.Bytes(), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.Config = c
}

// Start runs the agent process and waits until it has the GPS port open.
func (e *Env) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	args := append(append([]string(nil), e.opts.Command[1:]...), "run", "--config", e.ConfigPath)
	cmd := exec.Command(e.opts.Command[0], args...)
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	fmt.Fprintf(e.logs, "--- start %d: %s\n", e.boots+1, strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start agent: %v", err)
	}
	e.boots++
	e.proc = cmd
	exit := make(chan error, 1)
	e.exit = exit
	go func() { exit <- cmd.Wait() }()
}

// StartReplay waits for the agent to open the GPS port, then replays the
// track in the background until ctx ends or the track does.
func (e *Env) StartReplay(ctx context.Context) <-chan error {
	e.t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.GPS.WaitOpen(wctx); err != nil {
		e.t.Fatalf("the agent never opened the GPS port: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.GPS.Run(ctx) }()
	return done
}

// Kill stops the agent with SIGKILL, as a pulled battery would.
func (e *Env) Kill() { e.signal(syscall.SIGKILL) }

// Stop asks the agent to drain and exit (SIGTERM) and checks it exits 0.
func (e *Env) Stop() {
	e.t.Helper()
	e.mu.Lock()
	proc, exit := e.proc, e.exit
	e.mu.Unlock()
	if proc == nil {
		return
	}
	proc.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exit:
		if err != nil {
			e.t.Errorf("agent exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Errorf("agent did not exit within 30 s of SIGTERM")
		proc.Process.Kill()
		<-exit
	}
	e.mu.Lock()
	e.proc = nil
	e.mu.Unlock()
}

// Hup asks the agent to reload its config file.
func (e *Env) Hup() { e.signal(syscall.SIGHUP) }

func (e *Env) signal(sig syscall.Signal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		return
	}
	e.proc.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-e.exit
		e.proc = nil
	}
}

// Alive reports whether the agent process is still running.
func (e *Env) Alive() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		return false
	}
	select {
	case err := <-e.exit:
		e.exit <- err
		return false
	default:
		return true
	}
}

// Platform decodes everything the broker has accepted on the data
// channels so far.
func (e *Env) Platform() *platform.Platform {
	p := platform.Collect(nil)
	for _, m := range e.data.Messages() {
		if strings.HasSuffix(m.Topic, "/telemetry") || strings.HasSuffix(m.Topic, "/events") {
			p.Add(m.Topic, m.Payload, m.At)
		}
	}
	return p
}

// States returns the decoded state messages the broker accepted, in order.
func (e *Env) States() []map[string]any {
	var out []map[string]any
	for _, m := range e.data.Messages() {
		if strings.HasSuffix(m.Topic, "/state") {
			if st, err := mqtt.DecodeState(m.Payload); err == nil {
				out = append(out, st)
			}
		}
	}
	return out
}

// Positions counts distinct positions received.
func Positions(p *platform.Platform) int {
	n := 0
	for _, a := range p.Unique() {
		if a.Record.Kind() == kestrel.KindPosition {
			n++
		}
	}
	return n
}

// WaitFor polls the platform's view until cond holds.
func (e *Env) WaitFor(ctx context.Context, what string, cond func(*platform.Platform) bool) {
	e.t.Helper()
	for {
		p := e.Platform()
		if cond(p) {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s: %v (have %d positions, %d records)", what, ctx.Err(), Positions(p), len(p.Unique()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Drained waits until the agent has sent the positions it holds (their
// count stops growing: the replay has stopped), then stops the agent with
// SIGTERM, which drains what is left; Check then finds the spool empty.
// Periodic records (link usage, sensors) keep coming, so they are not
// waited for.
func (e *Env) Drained(ctx context.Context) {
	e.t.Helper()
	last, stable := -1, 0
	for stable < 15 {
		n := Positions(e.Platform())
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for the drain: %v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Stop only once the agent itself has nothing waiting, so that the
	// SIGTERM drain (bounded at 5 s) has only the shutdown's own records
	// to send, however slow the machine (qemu-arm under load).
	if e.Alive() {
		e.waitStatus(ctx, "an empty spool before SIGTERM", func(s localctl.Status) bool { return s.Spool.Records == 0 })
	}
	e.Stop()
}

// Check asserts the invariants every scenario shares. Call it after Stop.
func (e *Env) Check(wantPositions int) *platform.Platform {
	e.t.Helper()
	p := e.Platform()
	if errs := p.Errors(); len(errs) > 0 {
		e.t.Errorf("%d payloads did not decode, first: %v", len(errs), errs[0])
	}
	if gaps := p.Gaps(); len(gaps) > 0 {
		e.t.Errorf("sequence gaps after deduplication: %v", gaps)
	}
	left, err := SpoolDepth(e.Config.Spool.Dir)
	if err != nil {
		e.t.Errorf("reopen spool: %v", err)
	} else if left != 0 {
		e.t.Errorf("%d records left in the spool: made durable but never delivered", left)
	}
	n, bad, cut := 0, 0, map[uint32]int{}
	firstSeq := map[uint32]uint64{} // each boot's first position
	for _, a := range p.Unique() {
		if _, ok := a.Record.Body.(*kestrel.Position); ok {
			if s, seen := firstSeq[a.Record.Boot]; !seen || a.Record.Seq < s {
				firstSeq[a.Record.Boot] = a.Record.Seq
			}
		}
	}
	for _, a := range p.Unique() {
		pos, ok := a.Record.Body.(*kestrel.Position)
		if !ok {
			continue
		}
		n++
		first := firstSeq[a.Record.Boot] == a.Record.Seq
		src, ok := e.fixes[a.Record.Time]
		if !ok && first && pos.Flags&(kestrel.HasSpeed|kestrel.HasTrack) == 0 {
			// The agent opened the port mid-cycle and saw a GGA
			// without its RMC: a fix with no date from the receiver,
			// dated by the system clock as gpsd does. Live, that is
			// today; for a replayed old track it is not in the source.
			continue
		}
		values := kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack
		if ok && pos.Flags&values != src.Flags&values && pos.Flags&^src.Flags&values == 0 {
			// A cycle cut short when the replay stopped or the
			// cable was pulled (RMC without its GGA) is a fix with
			// fewer values: the ones it has must match.
			cut[a.Record.Boot]++
			full := src
			full.Flags = pos.Flags
			if pos.Flags&kestrel.HasAlt == 0 {
				full.Alt = pos.Alt
			}
			if pos.Flags&kestrel.HasSpeed == 0 {
				full.Speed = pos.Speed
			}
			if pos.Flags&kestrel.HasTrack == 0 {
				full.Track = pos.Track
			}
			src = full
		}
		if !ok || !WithinTolerance(pos, &src) {
			bad++
			if bad <= 5 {
				e.t.Errorf("position at %s (seq %d) is not a source fix within tolerance: %+v vs %+v",
					time.UnixMilli(a.Record.Time).UTC().Format(time.RFC3339Nano), a.Record.Seq, *pos, src)
			}
		}
	}
	for boot, c := range cut {
		if c > 2 {
			e.t.Errorf("boot %d: %d positions lack values their source fix has; only a cycle cut by a stop or unplug may", boot, c)
		}
	}
	if n < wantPositions {
		e.t.Errorf("platform has %d positions, want at least %d", n, wantPositions)
	}
	_, dups, msgs, bytes := p.Counts()
	e.t.Logf("platform: %d records (%d positions), %d duplicates, %d messages, %d bytes", len(p.Unique()), n, dups, msgs, bytes)
	return p
}

// SpoolDepth opens the spool offline (the agent stopped) and counts what
// is left in it.
func SpoolDepth(dir string) (int, error) {
	n, _, err := SpoolDepthNext(dir)
	return n, err
}

// SpoolDepthNext is SpoolDepth with the next seq the spool would hand out:
// after a clean stop, one above every seq the agent handed out.
func SpoolDepthNext(dir string) (int, uint64, error) {
	sp, err := spool.Open(dir, spool.Options{}, nil)
	if err != nil {
		return 0, 0, err
	}
	defer sp.Close()
	return sp.Metrics().Records, sp.NextSeq(), nil
}

// waitStatus polls the agent's control socket until cond holds.
func (e *Env) waitStatus(ctx context.Context, what string, cond func(localctl.Status) bool) {
	e.t.Helper()
	var last localctl.Status
	var err error
	for {
		if last, err = localctl.Query(ctx, e.Config.Status.Socket); err == nil && cond(last) {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s: %v (last status %+v, %v)", what, ctx.Err(), last.Spool, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logSize is how much the agent has logged so far (an offset for waitLog).
func (e *Env) logSize() int64 {
	fi, err := e.logs.Stat()
	if err != nil {
		e.t.Fatal(err)
	}
	return fi.Size()
}

// waitLog polls the agent's log, from offset from, until a line contains
// want.
func (e *Env) waitLog(ctx context.Context, what string, from int64, want string) {
	e.t.Helper()
	for {
		b, err := os.ReadFile(e.logs.Name())
		if err != nil {
			e.t.Fatal(err)
		}
		if int64(len(b)) > from && strings.Contains(string(b[from:]), want) {
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s in the agent log: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WithinTolerance is DESIGN's lossless bar: 1e-7 degrees, 0.1 m altitude,
// 0.01 m/s speed and 0.01 degrees track (the source fixes print m/s with
// three decimals, so one cm/s of rounding is allowed).
func WithinTolerance(got, want *kestrel.Position) bool {
	abs := func(v int64) int64 {
		if v < 0 {
			return -v
		}
		return v
	}
	flags := kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack
	return abs(int64(got.Lat)-int64(want.Lat)) <= 1 && abs(int64(got.Lon)-int64(want.Lon)) <= 1 &&
		abs(int64(got.Alt)-int64(want.Alt)) <= 10 && abs(int64(got.Speed)-int64(want.Speed)) <= 1 &&
		abs(int64(got.Track)-int64(want.Track)) <= 1 && got.Flags&flags == want.Flags&flags
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
