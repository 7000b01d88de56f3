package linkfault

import (
	"context"
	_ "embed"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/kernelrig"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// The receiver's log: a real drive (testdata/visnjan-car.nmea, from
// tkrajina/gpxpy, header in the file), looped.
//
//go:embed testdata/visnjan-car.nmea
var track []byte

func TestMain(m *testing.M) { kernelrig.Main(m) }

// The run's size. The defaults are the short run of the normal tests; make
// linkfault runs the full one (docs/benchmarks.md).
var sizes = []struct {
	env string
	def int
	doc string
}{
	{"KESTREL_LINKFAULT_LOSS_FIXES", 1500, "fixes fed at 100 fix/s under 20 % loss"},
	{"KESTREL_LINKFAULT_OUTAGE_FIXES", 2000, "fixes fed at 100 fix/s with the link down"},
	{"KESTREL_LINKFAULT_UNPLUGS", 10, "USB unplug and replug cycles"},
}

// TestLinkFault boots the rig and runs TestLinkFaultGuest in it.
func TestLinkFault(t *testing.T) {
	if kernelrig.InGuest() {
		t.Skip("host half")
	}
	env := map[string]string{}
	var total int
	for _, s := range sizes {
		v := os.Getenv(s.env)
		if v == "" {
			v = strconv.Itoa(s.def)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive count of %s", s.env, v, s.doc)
		}
		env[s.env] = v
		total += n
	}
	loss, _ := strconv.Atoi(env["KESTREL_LINKFAULT_LOSS_FIXES"])
	outage, _ := strconv.Atoi(env["KESTREL_LINKFAULT_OUTAGE_FIXES"])
	unplugs, _ := strconv.Atoi(env["KESTREL_LINKFAULT_UNPLUGS"])
	kernelrig.Run(t, kernelrig.Guest{
		Test:    "TestLinkFaultGuest",
		Modules: append(slices.Clone(kernelrig.USBSerialModules), "sch_netem"),
		Env:     env,
		MemMiB:  1024,
		// Under TCG: a minute to boot and enumerate, the feeds at 100
		// fix/s, a drain under 20 % loss at a tenth of that rate, and
		// about 10 s per unplug cycle.
		Timeout: time.Minute + time.Duration(loss+outage)*100*time.Millisecond + time.Duration(unplugs)*10*time.Second + 5*time.Minute,
		Report:  "linkfault: ",
	})
}

// run is the guest's world: the receiver on the gadget side, the broker,
// the platform's count, the agent.
type run struct {
	t      *testing.T
	rx     *Receiver
	usb    *Gadget
	broker *broker.Broker
	cfg    config.Config
	plat   *platform.Platform
	obs    []*broker.Observer
	taken  []int
	conns  atomic.Int64

	mu        sync.Mutex
	spooled   map[platform.Key]kestrel.Priority
	positions int
	lastPos   atomic.Int64 // unix nanoseconds of the last position spooled
}

func (r *run) onRecord(rec kestrel.Record) {
	r.mu.Lock()
	r.spooled[platform.Key{Device: rec.Device, Boot: rec.Boot, Seq: rec.Seq}] = rec.Priority
	if _, ok := rec.Body.(*kestrel.Position); ok {
		r.positions++
		r.lastPos.Store(time.Now().UnixNano())
	}
	r.mu.Unlock()
}

func (r *run) counts() (spooled, positions int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spooled), r.positions
}

// collect moves what the broker accepted since the last call into the
// platform's count, stamped with the broker's time of arrival.
func (r *run) collect() {
	for i, o := range r.obs {
		msgs := o.Messages()
		for _, m := range msgs[r.taken[i]:] {
			r.plat.Add(m.Topic, m.Payload, m.At)
		}
		r.taken[i] = len(msgs)
	}
}

// missing lists the records spooled so far that the platform lacks.
func (r *run) missing() []platform.Key {
	r.collect()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []platform.Key
	for k := range r.spooled {
		if !r.plat.Has(k) {
			out = append(out, k)
		}
	}
	return out
}

// drain waits until every record spooled so far has reached the platform
// and returns how long that took.
func (r *run) drain(ctx context.Context, what string) time.Duration {
	r.t.Helper()
	start := time.Now()
	for {
		m := r.missing()
		if len(m) == 0 {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			slices.SortFunc(m, func(a, b platform.Key) int { return int(a.Seq) - int(b.Seq) })
			r.t.Fatalf("%s: %d spooled records never reached the platform (first %v)", what, len(m), m[:min(5, len(m))])
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *run) report(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("linkfault: "+format, args...)
}

// countConns counts MQTT sessions the broker established (the agent's
// reconnects).
type countConns struct {
	mochi.HookBase
	n *atomic.Int64
}

func (h *countConns) ID() string { return "linkfault-conns" }
func (h *countConns) Provides(b byte) bool {
	return b == mochi.OnSessionEstablished
}
func (h *countConns) OnSessionEstablished(*mochi.Client, packets.Packet) { h.n.Add(1) }

func envInt(t *testing.T, name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q", name, os.Getenv(name))
	}
	return n
}

// TestLinkFaultGuest runs in the rig: the phases one after another on one
// agent, as a device would live through them.
func TestLinkFaultGuest(t *testing.T) {
	kernelrig.SkipOnHost(t)
	lossFixes := envInt(t, "KESTREL_LINKFAULT_LOSS_FIXES")
	outageFixes := envInt(t, "KESTREL_LINKFAULT_OUTAGE_FIXES")
	unplugs := envInt(t, "KESTREL_LINKFAULT_UNPLUGS")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := os.MkdirAll("/run/lock", 0o755); err != nil { // the serial lock files
		t.Fatal(err)
	}

	r := &run{t: t, spooled: map[platform.Key]kestrel.Priority{}, plat: platform.Collect(nil)}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Minute)
	usb, err := FindGadget(fctx, "/dev/ttyACM0")
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	r.usb = usb
	if r.rx, err = NewReceiver("/dev/ttyGS0", track); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); r.rx.Run(ctx) }()

	r.broker = broker.StartMochi(t)
	if err := r.broker.Server().AddHook(&countConns{n: &r.conns}, nil); err != nil {
		t.Fatal(err)
	}
	c := config.Defaults()
	c.Device.ID = "rig-1"
	c.Device.Fleet = "linkfault"
	c.Broker.URLs = []string{r.broker.URL()}
	// 10 s instead of LTE's 60 s, so that even the short run's
	// compressed outage outlasts it: the session finds the link dead and
	// reconnects, as it would in a real hour (docs/benchmarks.md).
	c.Broker.KeepAlive = config.D(10 * time.Second)
	c.Spool.Dir = "/tmp/spool"
	c.Remote.StateFile = "/tmp/remote.json"
	c.Remote.RequireSigned = false
	c.GPS.Port = usb.Node
	c.GPS.Baud = 9600 // cdc-acm ignores the rate; no detection needed
	c.Tracking = config.Tracking{}
	c.Hooks.Socket = "/tmp/events.sock"
	c.Status.Socket = "/tmp/control.sock"
	c.Hooks.LinkPeriod = config.D(0)
	c.Sensors.BatteryPeriod = config.D(0)
	c.Sensors.ThermalPeriod = config.D(0)
	r.cfg = c
	for _, ch := range []string{"telemetry", "events"} {
		r.obs = append(r.obs, r.broker.Observe(wire.Topic(c.Device.Fleet, c.Device.ID, ch)))
	}
	r.taken = make([]int, len(r.obs))

	// The agent's log (a warning per unplug) goes to a file, shown if the
	// test fails.
	logf, err := os.Create("/tmp/agent.log")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			l := strings.Split(string(b), "\n")
			t.Logf("agent log, last lines:\n%s", strings.Join(l[max(0, len(l)-40):], "\n"))
		}
		logf.Close()
	}()
	a, err := agent.New(c, agent.Options{Version: "linkfault", OnRecord: r.onRecord,
		Logger: slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	actx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() {
		stopAgent()
		<-agentDone
	}()

	// Warm up: fixes flow end to end over a clean link.
	r.rx.SetRate(10)
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	for _, pos := r.counts(); pos < 20; _, pos = r.counts() {
		if wctx.Err() != nil {
			t.Fatal("no fixes from /dev/ttyACM0 within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.rx.SetRate(0)
	r.drain(wctx, "warm-up")
	wcancel()

	r.phaseLoss(ctx, lossFixes)
	r.phaseOutage(ctx, outageFixes)
	r.phaseUnplug(ctx, unplugs)

	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	r.drain(dctx, "end")
	dcancel()
	stopAgent()
	if err := <-agentDone; err != nil {
		t.Fatalf("agent: %v", err)
	}
	agentDone <- nil // for the deferred stop
	m := a.Spool().Metrics()
	r.collect()
	unique, dups, msgs, _ := r.plat.Counts()
	spooled, _ := r.counts()
	r.report("total: %d records spooled, %d distinct delivered (%.2f %%), %d duplicates, %d messages, %d MQTT sessions; spool: %d left, %d evicted, %d refused",
		spooled, unique, 100*float64(unique)/float64(spooled), dups, msgs, r.conns.Load(), m.Records, m.Evicted, m.Rejected)
	if m.Records != 0 || m.Evicted != 0 || m.Rejected != 0 {
		t.Errorf("the spool holds %d records, evicted %d and refused %d", m.Records, m.Evicted, m.Rejected)
	}
}

// feed runs the receiver at rate until it has written n more cycles whole,
// then stops it, and returns what it wrote and dropped, the rate it
// achieved, and the positions the agent spooled meanwhile.
func (r *run) feed(ctx context.Context, n int, rate float64) (written, dropped int, achieved float64, positions int) {
	r.t.Helper()
	s0, d0 := r.rx.Counts()
	_, p0 := r.counts()
	start := time.Now()
	r.rx.SetRate(rate)
	for {
		s, d := r.rx.Counts()
		if s-s0 >= n {
			r.rx.SetRate(0)
			took := time.Since(start)
			// The last cycle's bytes are on their way to the agent.
			time.Sleep(time.Second)
			_, p := r.counts()
			return s - s0, d - d0, float64(s-s0) / took.Seconds(), p - p0
		}
		if ctx.Err() != nil {
			r.t.Fatalf("feeding %d fixes: %v", n, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *run) phaseLoss(ctx context.Context, fixes int) {
	r.t.Helper()
	if err := SetLoss("lo", 0.20); err != nil {
		r.t.Fatal(err)
	}
	start := time.Now()
	_, dups0, msgs0, _ := r.plat.Counts()
	c0 := r.conns.Load()
	written, dropped, rate, pos := r.feed(ctx, fixes, 100)
	dctx, cancel := context.WithTimeout(ctx, time.Duration(fixes)*100*time.Millisecond+2*time.Minute)
	took := r.drain(dctx, "20 % loss")
	cancel()
	if err := ClearQdisc("lo"); err != nil {
		r.t.Fatal(err)
	}
	_, dups, msgs, _ := r.plat.Counts()
	r.report("20%% loss: %d fixes written at %.0f fix/s (%d dropped by the link to the agent), %d positions spooled; all delivered %v after the feed stopped, with loss on (%v in all); %d messages, %d duplicates, %d new MQTT sessions",
		written, rate, dropped, pos, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), msgs-msgs0, dups-dups0, r.conns.Load()-c0)
	if pos != written {
		r.t.Errorf("20%% loss: %d fixes written, %d positions spooled", written, pos)
	}
}

func (r *run) phaseOutage(ctx context.Context, fixes int) {
	r.t.Helper()
	if err := SetLoss("lo", 1); err != nil {
		r.t.Fatal(err)
	}
	start := time.Now()
	c0 := r.conns.Load()
	_, dups0, msgs0, _ := r.plat.Counts()
	// Half way through, the officer presses the emergency button.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Duration(fixes) * 5 * time.Millisecond)
		if _, err := eventsock.Send(r.cfg.Hooks.Socket, "emergency", map[string]string{"name": "button"}); err != nil {
			r.t.Errorf("emergency: %v", err)
		}
	}()
	written, dropped, rate, pos := r.feed(ctx, fixes, 100)
	<-done
	down := time.Since(start)
	if err := ClearQdisc("lo"); err != nil {
		r.t.Fatal(err)
	}
	restored := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	took := r.drain(dctx, "outage")
	cancel()
	// The emergency came first after the link did: before the last of
	// the backlog; its rank is the count of messages (distinct arrival
	// times at the broker) after the link came back up to and with it.
	var emergency, last time.Time
	after := map[time.Time]bool{}
	for _, a := range r.plat.Unique() {
		if a.Arrived.Before(restored) {
			continue
		}
		after[a.Arrived] = true
		if ev, ok := a.Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
			emergency = a.Arrived
		}
		if a.Arrived.After(last) {
			last = a.Arrived
		}
	}
	rank := 0
	for at := range after {
		if !at.After(emergency) {
			rank++
		}
	}
	_, dups, msgs, _ := r.plat.Counts()
	r.report("outage: link down %v (netem loss 100%% on lo) while %d fixes were written at %.0f fix/s (%d dropped by the link to the agent), %d positions spooled; all delivered %v after the link came back (the emergency %v after it, in message %d of %d; the backlog's last record %v after it); %d messages, %d duplicates, %d new MQTT sessions",
		down.Round(time.Millisecond), written, rate, dropped, pos, took.Round(time.Millisecond),
		emergency.Sub(restored).Round(time.Millisecond), rank, len(after), last.Sub(restored).Round(time.Millisecond), msgs-msgs0, dups-dups0, r.conns.Load()-c0)
	if pos != written {
		r.t.Errorf("outage: %d fixes written, %d positions spooled", written, pos)
	}
	if emergency.IsZero() {
		r.t.Error("outage: the emergency raised during the outage was not delivered after it")
	} else if !emergency.Before(last) {
		r.t.Errorf("outage: the emergency arrived %v after the link came back, after the backlog (%v)",
			emergency.Sub(restored), last.Sub(restored))
	}
}

func (r *run) phaseUnplug(ctx context.Context, cycles int) {
	r.t.Helper()
	start := time.Now()
	c0 := r.conns.Load()
	_, dups0, msgs0, _ := r.plat.Counts()
	// A receiver's usual rate: the time to the first fix after a replug
	// includes waiting for the next one.
	const rate = 1
	r.rx.SetRate(rate)
	var took []time.Duration
	for i := range cycles {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		// The receiver is bus powered: it goes off with the cable.
		r.rx.SetRate(0)
		if err := r.usb.Unplug(); err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.usb.WaitNode(cctx, false); err != nil {
			r.t.Fatalf("unplug %d: %v", i+1, err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := r.usb.Plug(); err != nil {
			r.t.Fatal(err)
		}
		back, err := r.usb.WaitNode(cctx, true)
		if err != nil {
			r.t.Fatalf("replug %d: %v", i+1, err)
		}
		r.rx.SetRate(rate)
		for r.lastPos.Load() < back.UnixNano() {
			if cctx.Err() != nil {
				r.t.Fatalf("replug %d: no fix decoded within a minute of %s reappearing", i+1, r.usb.Node)
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Unix(0, r.lastPos.Load()).Sub(back))
		// Plugged in and running a while before the next pull.
		time.Sleep(1500 * time.Millisecond)
		cancel()
	}
	r.rx.SetRate(0)
	time.Sleep(time.Second)
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	drained := r.drain(dctx, "unplugs")
	cancel()
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	over := 0
	for _, d := range took {
		if d > 2*time.Second {
			over++
		}
	}
	_, dups, msgs, _ := r.plat.Counts()
	r.report("usb: %d unplug/replug cycles of %s in %v; node back to first fix decoded: p50 %v, p90 %v, max %v (%d over 2 s); all delivered %v after the last; %d messages, %d duplicates, %d new MQTT sessions",
		cycles, r.usb.Node, time.Since(start).Round(time.Millisecond),
		sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)*9/10].Round(time.Millisecond),
		sorted[len(sorted)-1].Round(time.Millisecond), over, drained.Round(time.Millisecond), msgs-msgs0, dups-dups0, r.conns.Load()-c0)
	if over > 0 {
		r.t.Errorf("usb: %d of %d replugs took over 2 s to the first fix: %v", over, cycles, took)
	}
}
