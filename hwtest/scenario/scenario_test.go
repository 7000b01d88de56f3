package scenario

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/hwtest/faultproxy"
	"github.com/kestrel-edge/kestrel/hwtest/loopfs"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
	"golang.org/x/sys/unix"
)

// The tracks are real recordings, kept once in the wire package's
// testdata (see its README for their sources).
const tracks = "../../transport/wire/testdata/tracks/"

var (
	buildOnce sync.Once
	binDir    string
	native    []string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kestrel-scenario-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func command(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end scenario: skipped with -short")
	}
	buildOnce.Do(func() { native, buildErr = Binary(binDir, runtime.GOARCH) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return native
}

func track(t *testing.T, name string) (nmea, fixes []byte) {
	t.Helper()
	var err error
	if nmea, err = os.ReadFile(tracks + name + ".nmea"); err != nil {
		t.Fatal(err)
	}
	if fixes, err = os.ReadFile(tracks + name + ".fixes.jsonl"); err != nil {
		t.Fatal(err)
	}
	return nmea, fixes
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// atLeast waits until the platform holds n positions.
func atLeast(n int) func(*platform.Platform) bool {
	return func(p *platform.Platform) bool { return Positions(p) >= n }
}

// most is the share of the fixes a simulator sent that must arrive as
// positions: the cycle cut by stopping the replay, and one a replayed loop
// can split, are not fixes. Losses that matter show as sequence gaps or a
// spool left non-empty, which Check asserts exactly.
func most(sent int) int { return sent * 95 / 100 }

// runWhole replays the whole car track (104 fixes) through the agent, with
// a radio and sensors, and checks that every fix arrives and that the
// radio, battery and thermal records decode with the simulators' values.
func runWhole(t *testing.T, cmd []string, speed float64, profile kestrel.RadioProfile, wantEBPF bool) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: cmd, Track: nmea, Fixes: fixes, Speed: speed, Radio: profile, Sensors: true,
		Edit: func(c *config.Config) {
			c.Hooks.EBPF = true
			c.Hooks.LinkPeriod = config.D(time.Second)
		}})
	ctx := timeout(t, 3*time.Minute)
	e.Start()
	done := e.StartReplay(ctx)
	<-done
	e.WaitFor(ctx, "every fix, a radio status and a battery reading", func(p *platform.Platform) bool {
		return Positions(p) >= 104 && count(p, kestrel.KindRadio) > 0 && count(p, kestrel.KindBattery) > 0 && count(p, kestrel.KindThermal) > 0
	})
	e.Drained(ctx)
	p := e.Check(104)
	for _, a := range p.Unique() {
		switch b := a.Record.Body.(type) {
		case *kestrel.RadioStatus:
			if b.Profile != profile || b.Registered != kestrel.RegHome || !b.Online {
				t.Errorf("radio status %+v: want %v, registered home, online", *b, profile)
			}
			if profile == kestrel.ProfileLTE && (b.Operator != "EE" || b.IMEI != "356938035643809" || b.RSRP == 0) {
				t.Errorf("LTE status %+v: want operator EE, the IMEI and RSRP", *b)
			}
			if profile == kestrel.ProfileTETRA && (b.Identity == "" || b.Talkgroup != "2342609001001") {
				t.Errorf("TETRA status %+v: want identity and talkgroup 2342609001001", *b)
			}
		case *kestrel.Battery:
			if b.Capacity != 81 || b.Status != "Discharging" || b.VoltageMV != 3950 || b.TempDeciC != 312 {
				t.Errorf("battery %+v: want 81%% Discharging 3950 mV 31.2 °C", *b)
			}
		case *kestrel.Thermal:
			if b.MilliC != 48500 {
				t.Errorf("thermal %+v: want 48500 m°C", *b)
			}
		}
	}
	// The state message says which hooks loaded; where the kernel or the
	// architecture refuses, the link counters come from /proc/net/dev.
	var caps map[string]any
	for _, st := range e.States() {
		if c, ok := st["capabilities"].(map[string]any); ok && len(c) > len(caps) {
			caps = c
		}
	}
	if caps == nil {
		t.Fatal("no state message listed capabilities")
	}
	t.Logf("capabilities: %v", caps)
	link, _ := caps["ebpf_link"].(string)
	if wantEBPF && link != "ok" {
		t.Errorf("eBPF link counters: %q, want ok (running as root on a kernel with BPF)", link)
	}
	if exec, _ := caps["ebpf_exec"].(string); wantEBPF != (exec == "ok") {
		t.Errorf("eBPF exec audit: %q (want ok: %v)", exec, wantEBPF)
	}
	if !wantEBPF && !strings.HasPrefix(link, "unavailable") {
		t.Errorf("eBPF link counters: %q, want unavailable", link)
	}
}

// ebpfUsable: the kernel lets this process load BPF programs (root with
// tracefs mounted); the hooks' own tests say why when it does not.
func ebpfUsable() bool {
	_, err := os.Stat("/sys/kernel/tracing/events/net/net_dev_xmit")
	return err == nil
}

func count(p *platform.Platform, k kestrel.Kind) int {
	n := 0
	for _, a := range p.Unique() {
		if a.Record.Kind() == k {
			n++
		}
	}
	return n
}

func TestNormalRun(t *testing.T) {
	// eBPF loads where the kernel allows it: as root, as CI runs.
	runWhole(t, command(t), 20, kestrel.ProfileLTE, os.Geteuid() == 0 && ebpfUsable())
}

// TestNormalRunARM runs the linux/arm (GOARM=7) binary under qemu-arm,
// with a TETRA radio. The eBPF hooks do not exist for 32-bit ARM; the
// agent says so and runs on.
func TestNormalRunARM(t *testing.T) {
	command(t)
	cmd, err := Binary(binDir, "arm")
	if err != nil {
		t.Fatalf("no linux/arm run: %v", err)
	}
	runWhole(t, cmd, 10, kestrel.ProfileTETRA, false)
}

// TestBrokerDown60s kills the broker (SIGKILL) for 60 seconds in the
// middle of a drive: everything recorded meanwhile arrives after it comes
// back.
func TestBrokerDown60s(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 5, Loop: true})
	ctx := timeout(t, 4*time.Minute)
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	e.WaitFor(ctx, "first fixes", atLeast(20))
	e.Broker.Kill()
	time.Sleep(60 * time.Second)
	e.Broker.Restart()
	e.WaitFor(ctx, "fixes after the outage", atLeast(320))
	stopReplay()
	sent := e.GPS.Sent() / 2
	e.Drained(ctx)
	e.Check(most(sent))
}

// TestAgentKilled kills the agent with SIGKILL mid-drive and starts it
// again: the next boot continues, nothing durable is lost, and sequence
// numbers only grow.
func TestAgentKilled(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 10, Loop: true})
	ctx := timeout(t, 3*time.Minute)
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	e.WaitFor(ctx, "first fixes", atLeast(30))
	e.Kill()
	e.Start()
	e.WaitFor(ctx, "fixes from the second boot", func(p *platform.Platform) bool {
		for _, a := range p.Unique() {
			if a.Record.Boot >= 2 && a.Record.Kind() == kestrel.KindPosition {
				return Positions(p) >= 80
			}
		}
		return false
	})
	stopReplay()
	e.Drained(ctx)
	p := e.Check(80)
	maxSeq := map[uint32]uint64{}
	minSeq := map[uint32]uint64{}
	for _, a := range p.Unique() {
		r := a.Record
		if r.Seq > maxSeq[r.Boot] {
			maxSeq[r.Boot] = r.Seq
		}
		if m, ok := minSeq[r.Boot]; !ok || r.Seq < m {
			minSeq[r.Boot] = r.Seq
		}
	}
	if len(maxSeq) != 2 {
		t.Fatalf("boots seen: %v, want 2", maxSeq)
	}
	if minSeq[2] <= maxSeq[1] {
		t.Errorf("sequence reused after the crash: boot 2 starts at %d, boot 1 reached %d", minSeq[2], maxSeq[1])
	}
}

// TestGPSUnplugReplug pulls the receiver's USB cable and plugs it back in
// (the by-id link follows the new device): the agent reports no data, then
// carries on.
func TestGPSUnplugReplug(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 10, Loop: true,
		Edit: func(c *config.Config) { c.GPS.Watchdog = config.D(time.Second) }})
	ctx := timeout(t, 3*time.Minute)
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	e.WaitFor(ctx, "first fixes", atLeast(20))
	if err := e.GPS.Unplug(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	before := Positions(e.Platform())
	if err := e.GPS.Replug(); err != nil {
		t.Fatal(err)
	}
	e.WaitFor(ctx, "fixes after the replug", atLeast(before+30))
	stopReplay()
	e.Drained(ctx)
	p := e.Check(before + 30)
	var noData bool
	for _, a := range p.Unique() {
		if s, ok := a.Record.Body.(*kestrel.GPSStatus); ok && s.State == kestrel.GPSNoData {
			noData = true
		}
	}
	if !noData {
		t.Error("no GPS no_data status was reported while the receiver was unplugged")
	}
	// A fitter without broker access reads the same in the local log.
	log, _ := os.ReadFile(filepath.Join(e.Dir, "agent.log"))
	for _, want := range []string{"gps silent", "gps data again"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the agent's log lacks %q", want)
		}
	}
}

// TestLossyLink puts the broker behind a link with 500 ms latency that
// stalls a fifth of the time (what 20% packet loss does to a TCP stream).
func TestLossyLink(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	var proxy *faultproxy.Proxy
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 10})
	proxy = faultproxy.Start(t, e.Broker.Addr())
	proxy.SetLatency(500 * time.Millisecond)
	c := e.Config
	c.Broker.URLs = []string{"tcp://" + proxy.Addr()}
	e.WriteConfig(c)
	ctx := timeout(t, 3*time.Minute)
	lossy, stopLoss := context.WithCancel(ctx)
	defer stopLoss()
	go func() {
		for lossy.Err() == nil {
			proxy.SetStall(true)
			time.Sleep(200 * time.Millisecond)
			proxy.SetStall(false)
			time.Sleep(800 * time.Millisecond)
		}
	}()
	e.Start()
	<-e.StartReplay(ctx)
	e.WaitFor(ctx, "every fix", atLeast(104))
	stopLoss()
	e.Drained(ctx)
	e.Check(104)
}

// TestConfigChangeMidDrain changes the config (batching and tracking,
// which restarts the broker session) with SIGHUP while a backlog drains.
func TestConfigChangeMidDrain(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 100, Loop: true,
		Edit: func(c *config.Config) { c.Broker.BatchMax = 5; c.Broker.InFlight = 2 }})
	ctx := timeout(t, 3*time.Minute)
	e.Broker.Kill()
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	time.Sleep(8 * time.Second)
	stopReplay()
	sent := e.GPS.Sent() / 2
	e.Broker.Restart()
	e.WaitFor(ctx, "the drain to start", atLeast(50))
	c := e.Config
	c.Broker.BatchMax = 100
	c.Broker.InFlight = 4
	c.Tracking.MinInterval = config.D(0)
	e.WriteConfig(c)
	e.Hup()
	if !e.Alive() {
		t.Fatal("the agent died during the reload")
	}
	e.Drained(ctx)
	e.Check(most(sent))
}

// TestEmergencyDuringBacklog presses the emergency button while a backlog
// drains over a narrowband link (4 kB/s, so the drain lasts seconds): the
// emergency must overtake the backlog.
func TestEmergencyDuringBacklog(t *testing.T) {
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 200, Loop: true,
		Edit: func(c *config.Config) { c.Broker.BatchMax = 20; c.Broker.InFlight = 2 }})
	proxy := faultproxy.Start(t, e.Broker.Addr())
	proxy.SetRate(4000)
	c := e.Config
	c.Broker.URLs = []string{"tcp://" + proxy.Addr()}
	e.WriteConfig(c)
	ctx := timeout(t, 3*time.Minute)
	e.Broker.Kill()
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	time.Sleep(10 * time.Second)
	stopReplay()
	sent := e.GPS.Sent() / 2
	e.Broker.Restart()
	e.WaitFor(ctx, "the drain to start", atLeast(20))
	if _, err := eventsock.Send(e.Config.Hooks.Socket, "emergency", map[string]string{"name": "side-button"}); err != nil {
		t.Fatalf("firmware event: %v", err)
	}
	e.Drained(ctx)
	p := e.Check(most(sent))
	var emergency time.Time
	var lastBacklog time.Time
	for _, a := range p.Unique() {
		if ev, ok := a.Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
			emergency = a.Arrived
		}
		if a.Record.Kind() == kestrel.KindPosition && a.Arrived.After(lastBacklog) {
			lastBacklog = a.Arrived
		}
	}
	if emergency.IsZero() {
		t.Fatal("the emergency never arrived")
	}
	if !emergency.Before(lastBacklog) {
		t.Errorf("the emergency arrived at %s, after the backlog finished at %s", emergency.Format(time.StampMilli), lastBacklog.Format(time.StampMilli))
	}
}

// steppedClock is a wall clock that a test can step.
type steppedClock struct{ offset atomic.Int64 }

func (c *steppedClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// TestClockStepped steps the agent's wall clock by an hour, forwards and
// backwards, mid-drive. It runs the agent in-process: stepping the real
// system clock would disturb everything else on the machine.
func TestClockStepped(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			nmea, fixes := track(t, "visnjan-car")
			clock := &steppedClock{}
			e := New(t, Options{Command: []string{"in-process"}, Track: nmea, Fixes: fixes, Speed: 10})
			ctx := timeout(t, 2*time.Minute)
			a, err := agent.New(e.Config, agent.Options{Now: clock.Now, Version: "scenario",
				Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			run, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- a.Run(run) }()
			replay := e.StartReplay(ctx)
			e.WaitFor(ctx, "first fixes", atLeast(30))
			clock.offset.Store(int64(step))
			if _, err := eventsock.Send(e.Config.Hooks.Socket, "recording_start", map[string]string{"name": "after-step"}); err != nil {
				t.Fatal(err)
			}
			<-replay
			e.WaitFor(ctx, "every fix", atLeast(104))
			time.Sleep(time.Second)
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			evicted := a.Spool().Metrics().Evicted
			a.Close()
			p := e.Check(104)
			var stamped bool
			for _, arr := range p.Unique() {
				if ev, ok := arr.Record.Body.(*kestrel.Event); ok && ev.Name == "after-step" {
					d := time.UnixMilli(arr.Record.Time).Sub(arr.Arrived)
					stamped = d > step-time.Minute && d < step+time.Minute
				}
			}
			if !stamped {
				t.Errorf("the event after the step does not carry the stepped agent clock")
			}
			if evicted != 0 {
				t.Errorf("the clock step evicted %d records", evicted)
			}
		})
	}
}

// TestDiskFull runs the spool on a 1 MiB filesystem while the broker is
// down: the spool fills the medium, evicts by policy (never an emergency),
// reports it in the state message and the log, keeps running, and delivers
// what it holds when the broker returns. Every seq the agent handed out is
// accounted for, exactly: delivered, or named by the spool's "spool evicted
// by policy" log lines, or refused at Append ("record not spooled").
//
// A full medium frees whole segments, and the emergency has segments of
// its own: the segment of positions written around the emergency goes
// while the emergency stays, so the platform sees a gap between them. That
// gap is policy (issue 21: it was counted but named nowhere), and the
// accounting checks it is nothing more.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs as root)")
	}
	nmea, fixes := track(t, "visnjan-car")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Skipf("the kernel refused a tmpfs mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	e := New(t, Options{Command: command(t), Track: nmea, Fixes: fixes, Speed: 100, Loop: true,
		Edit: func(c *config.Config) {
			c.Spool.Dir = filepath.Join(mnt, "spool")
			c.Spool.MaxBytes = 1 << 20 // more than the medium has free
		}})
	// Every step waits for what it needs, not for a time: on a loaded
	// machine the replay runs slower and the medium fills later.
	ctx := timeout(t, 5*time.Minute)
	e.Broker.Kill()
	e.Start()
	replay, stopReplay := context.WithCancel(ctx)
	e.StartReplay(replay)
	e.waitStatus(ctx, "records in the spool", func(st localctl.Status) bool { return st.Spool.Records >= 100 })
	loopfs.Fill(t, mnt, 4<<10) // the camera's recorder takes the rest of the partition
	// Appending goes on against the full disk until the spool has
	// evicted for space, then an emergency, then more positions until the
	// spool has evicted for space again (the segment around the emergency).
	e.waitStatus(ctx, "spool health full", func(st localctl.Status) bool { return st.Spool.Health == "full" })
	e.waitLog(ctx, "an eviction for space", 0, "full_medium=")
	mark := e.logSize()
	if _, err := eventsock.Send(e.Config.Hooks.Socket, "emergency", map[string]string{"name": "disk-full"}); err != nil {
		t.Fatalf("firmware event: %v", err)
	}
	e.waitLog(ctx, "an eviction for space after the emergency", mark, "full_medium=")
	time.Sleep(2 * time.Second) // a run of positions after it
	stopReplay()
	if !e.Alive() {
		t.Fatal("the agent died on a full disk")
	}
	// The birth message on reconnect carries the health of that moment.
	e.waitStatus(ctx, "spool health still full before the broker returns", func(st localctl.Status) bool { return st.Spool.Health == "full" })
	e.Broker.Restart()
	e.WaitFor(ctx, "the emergency", func(p *platform.Platform) bool {
		for _, a := range p.Unique() {
			if ev, ok := a.Record.Body.(*kestrel.Event); ok && ev.Name == "disk-full" {
				return true
			}
		}
		return false
	})
	var full bool
	var stateEvicted int64
	for _, s := range e.States() {
		if s["spool_health"] == "full" {
			full = true
		}
		if n, ok := stateInt(s["spool_evicted"]); ok {
			stateEvicted = max(stateEvicted, n)
		}
	}
	if !full {
		t.Error("no state message reported spool_health full")
	}
	e.Drained(ctx)
	p := e.Platform()
	left, next, err := SpoolDepthNext(e.Config.Spool.Dir)
	if err != nil || left != 0 {
		t.Errorf("spool after the drain: %d records left, %v", left, err)
	}
	logs, err := os.ReadFile(e.logs.Name())
	if err != nil {
		t.Fatal(err)
	}
	evicted, err := spool.ParseEvictionLog(string(logs))
	if err != nil {
		t.Fatal(err)
	}
	refused := notSpooled(string(logs))
	delivered := map[uint64]bool{}
	var newestPos uint64
	for _, a := range p.Unique() {
		if a.Record.Boot != 1 {
			t.Errorf("record from boot %d: the agent ran once", a.Record.Boot)
		}
		delivered[a.Record.Seq] = true
		if a.Record.Kind() == kestrel.KindPosition {
			newestPos = max(newestPos, a.Record.Seq)
		}
	}
	named, newestEvicted := 0, uint64(0)
	for _, r := range evicted {
		named += r.Records
		newestEvicted = max(newestEvicted, r.Last)
	}
	missing := 0
	for q := uint64(1); q < next; q++ {
		if delivered[q] || refused[q] {
			continue
		}
		missing++
		if !slices.ContainsFunc(evicted, func(r spool.SeqRange) bool { return r.First <= q && q <= r.Last }) {
			t.Errorf("seq %d was neither delivered, evicted nor refused: lost silently", q)
		}
	}
	t.Logf("%d seqs handed out: %d delivered (%d positions), %d evicted by policy (named in %d ranges), %d refused; state message spool_evicted %d; platform gaps %v",
		next-1, len(delivered), Positions(p), named, len(evicted), len(refused), stateEvicted, p.Gaps())
	if named != missing {
		t.Errorf("the log names %d evicted records, %d seqs are neither delivered nor refused", named, missing)
	}
	if named == 0 || stateEvicted == 0 || stateEvicted > int64(named) {
		t.Errorf("evictions: %d named in the log, state message says %d", named, stateEvicted)
	}
	// Oldest first: the newest positions survive.
	if newestPos == 0 || newestPos < newestEvicted {
		t.Errorf("newest position delivered is seq %d, newest evicted %d: eviction must take the oldest first", newestPos, newestEvicted)
	}
}

// stateInt reads an integer field of a decoded state message.
func stateInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	case int:
		return int64(n), true
	}
	return 0, false
}

// notSpooled collects the seqs of the agent's "record not spooled" lines
// (Append refused them).
func notSpooled(logs string) map[uint64]bool {
	out := map[uint64]bool{}
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, `msg="record not spooled"`) {
			continue
		}
		if i := strings.Index(line, " seq="); i >= 0 {
			var q uint64
			if _, err := fmt.Sscanf(line[i+5:], "%d", &q); err == nil {
				out[q] = true
			}
		}
	}
	return out
}

// TestEmergencyWithDefaultPaths sends an emergency the documented way, with
// every default: the agent's hooks.socket left unset and `kestrel hook
// send emergency` given no --socket. The two must meet at one path.
func TestEmergencyWithDefaultPaths(t *testing.T) {
	cmd := command(t)
	def := config.Defaults().Hooks.Socket
	if def != eventsock.DefaultPath {
		t.Fatalf("the agent's default hooks.socket %q is not the path `kestrel hook send` uses (%q)", def, eventsock.DefaultPath)
	}
	if os.Geteuid() != 0 {
		t.Skipf("needs root to listen at the default %s", def)
	}
	if _, err := eventsock.Send(def, "emergency", nil); err == nil || !strings.Contains(err.Error(), "no such file") && !strings.Contains(err.Error(), "connection refused") {
		t.Skipf("an agent is already listening at %s on this machine", def)
	}
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: cmd, Track: nmea, Fixes: fixes, Speed: 20,
		Edit: func(c *config.Config) {
			d := config.Defaults().Hooks
			c.Hooks.Socket, c.Hooks.AllowUIDs = d.Socket, d.AllowUIDs
		}})
	ctx := timeout(t, 2*time.Minute)
	e.Start()
	e.StartReplay(ctx)
	e.WaitFor(ctx, "positions", atLeast(5))
	out, err := exec.CommandContext(ctx, cmd[0], append(cmd[1:], "hook", "send", "emergency", "name=side-button")...).CombinedOutput()
	if err != nil {
		t.Fatalf("kestrel hook send emergency: %v\n%s", err, out)
	}
	e.WaitFor(ctx, "the emergency", func(p *platform.Platform) bool {
		for _, a := range p.Unique() {
			if ev, ok := a.Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
				return true
			}
		}
		return false
	})
	// Stop it as systemd would: the socket at the system path goes with it.
	e.Stop()
}

// TestSelftestBesideRunningAgent runs the fitter's self-test, configured
// for another baud rate, while the agent holds the GPS. Opening a tty
// resets its line settings, so a self-test that opened the port would leave
// the agent reading garbage until restarted. The port's lock file must keep
// it off, with and without the agent's control socket to ask instead.
func TestSelftestBesideRunningAgent(t *testing.T) {
	cmd := command(t)
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: cmd, Track: nmea, Fixes: fixes, Speed: 5, Loop: true})
	ctx := timeout(t, 3*time.Minute)
	e.Start()
	e.StartReplay(ctx)
	e.WaitFor(ctx, "positions", atLeast(5))
	for _, tc := range []struct {
		name string
		sets []string
		want string
	}{
		{"lock file only", []string{"status.socket="}, "is held by pid"},
		{"asks the agent", nil, "held by the running agent"},
	} {
		args := append(append([]string(nil), cmd[1:]...), "selftest", "--config", e.ConfigPath, "--json", "--set", "gps.baud=4800")
		for _, s := range tc.sets {
			args = append(args, "--set", s)
		}
		out, _ := exec.CommandContext(ctx, cmd[0], args...).Output()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: the self-test's gps row does not say %q:\n%s", tc.name, tc.want, out)
		}
		before := Positions(e.Platform())
		e.WaitFor(ctx, tc.name+": positions still flowing after the self-test", atLeast(before+5))
	}
}

// TestStatusWatch reads `kestrel status --watch` on a terminal (a pty) and
// checks that it shows live values: the GPS sentence count moves between
// refreshes (the last fix), and the broker connection and spool lanes are
// there.
func TestStatusWatch(t *testing.T) {
	cmd := command(t)
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: cmd, Track: nmea, Fixes: fixes, Speed: 5, Loop: true})
	ctx := timeout(t, 2*time.Minute)
	e.Start()
	e.StartReplay(ctx)
	e.WaitFor(ctx, "positions", atLeast(3))
	term, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	slave, err := os.OpenFile(term.Path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	w := exec.CommandContext(ctx, cmd[0], append(cmd[1:], "status", "--watch", "--interval", "300ms", "--socket", e.Config.Status.Socket)...)
	w.Stdout, w.Stderr = slave, slave
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Process.Kill(); w.Wait() }()
	var screen strings.Builder
	buf := make([]byte, 4096)
	counts := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(counts) < 3 {
		term.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := term.Read(buf)
		screen.Write(buf[:n])
		for _, frame := range strings.Split(screen.String(), "\x1b[H\x1b[2J") {
			if i := strings.Index(frame, "last fix "); i >= 0 && strings.Contains(frame, "broker") {
				if j := strings.IndexByte(frame[i:], '('); j > 0 {
					counts[frame[i:i+j]] = true
				}
			}
		}
	}
	s := screen.String()
	if len(counts) < 3 {
		t.Fatalf("the watch did not refresh with moving values (saw %v):\n%s", counts, tail([]byte(s), 40))
	}
	for _, want := range []string{"\x1b[H\x1b[2J", "connected", "emergency 0", "last fix", "gps "} {
		if !strings.Contains(s, want) {
			t.Errorf("the watch screen lacks %q", want)
		}
	}
}
