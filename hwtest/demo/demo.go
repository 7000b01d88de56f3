// Package demo runs the whole agent with no hardware and no broker: a GPS
// receiver replaying a real recorded track over a pseudo-terminal, an LTE
// modem simulator, the firmware event socket, the real spool and MQTT
// session, and an in-process broker, with the platform's own ingest
// (platform.Ingest) storing what arrives in an embedded SQLite file; it
// prints each record as it commits and reads the summary back from that
// file. It is `kestrel demo`.
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/gpssim"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/platform/web"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Track is a real recorded walk (see the header of the file for its
// source), the kind of track a body-worn camera makes.
//
//go:embed korita-zbevnica-hike.nmea
var Track []byte

// TrackName names the embedded track in the demo's output.
const TrackName = "korita-zbevnica-hike (real recorded walk, Garmin, 513 fixes)"

// Options for Run.
type Options struct {
	// For is how long the devices run; 0 replays the track once, to its
	// end (about 51 s at the default speed).
	For time.Duration
	// Speed is how many receiver cycles the GPS replays per second.
	Speed float64
	// Out receives the decoded records and the summary.
	Out io.Writer
	// Log receives the agent's own log (nil: warnings only, to stderr).
	Log *slog.Logger
	// Version is printed in the state message.
	Version string
	// HTTP, when set, also serves the dashboard (platform/web) on the
	// demo's store at this address, behind a one-time login printed to
	// Out; after the summary it keeps serving until ctx ends. A bare
	// ":PORT" listens on loopback. Plain HTTP, on a loopback address only,
	// unless HTTPS.
	HTTP string
	// HTTPS serves the dashboard over TLS with a self-signed certificate
	// made in the demo's temp dir: the only way onto a non-loopback
	// address, as kestrel-platform serve is TLS unless told otherwise.
	HTTPS bool
}

// DemoUser is the one-time login's user name: a supervisor, so that the
// demo's emergency can be acknowledged.
const DemoUser = "demo"

// HTTPAddr is the address the dashboard listens on for o.HTTP: a bare
// ":PORT" is the loopback address, and a plain listener on any other
// address is refused.
func HTTPAddr(addr string, https bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("demo: --http %q: want HOST:PORT or :PORT: %w", addr, err)
	}
	if host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	if !https && !web.Loopback(addr) {
		return "", fmt.Errorf("demo: --http %s: the demo serves plain HTTP on a loopback address only; give --https (a self-signed certificate) to serve it on another address", addr)
	}
	return addr, nil
}

// Summary is what the platform stored, read back from its database.
type Summary struct {
	Records    int // distinct records stored
	Positions  int
	Events     int
	Duplicates int // records received again (redeliveries), not stored twice
	Messages   int
	Bytes      int // payload bytes of data messages
	Spooled    int // records the agent made
	Gaps       []platform.Gap
	Missing    int // records spooled but never stored
	Database   string
}

// key identifies a record of the demo's one device.
type key struct {
	boot uint32
	seq  uint64
}

// BytesPerFix is the payload bytes per position (all kinds' bytes are
// counted, so this is an upper bound for positions alone).
func (s Summary) BytesPerFix() float64 {
	if s.Positions == 0 {
		return 0
	}
	return float64(s.Bytes) / float64(s.Positions)
}

// Run runs the demo and returns what the platform received.
func Run(ctx context.Context, o Options) (Summary, error) {
	if o.Speed <= 0 {
		o.Speed = 10
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	var sum Summary
	httpAddr := ""
	if o.HTTP != "" {
		var err error
		if httpAddr, err = HTTPAddr(o.HTTP, o.HTTPS); err != nil {
			return sum, err
		}
	}
	dir, err := os.MkdirTemp("", "kestrel-demo-")
	if err != nil {
		return sum, fmt.Errorf("demo: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	brk, addr, err := startBroker()
	if err != nil {
		return sum, err
	}
	defer brk.Close()
	url := "tcp://" + addr

	gps, err := gpssim.New(gpssim.Config{Log: Track, Baud: 9600, Speed: o.Speed})
	if err != nil {
		return sum, fmt.Errorf("demo: gps simulator: %w", err)
	}
	defer gps.Close()
	modem, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		return sum, fmt.Errorf("demo: modem simulator: %w", err)
	}
	defer modem.Close()

	cfg := Config(dir, url, gps.Path(), modem.Path())
	out := &printer{w: o.Out}
	dbFile := filepath.Join(dir, "platform.db")
	store, err := platform.Open(ctx, "sqlite:"+dbFile)
	if err != nil {
		return sum, err
	}
	defer store.Close()
	var dups int
	var dupMu sync.Mutex
	onCommit := out.committed
	var commits *web.Commits
	if httpAddr != "" {
		commits = web.NewCommits()
		onCommit = func(rows []platform.Row, at time.Time) {
			out.committed(rows, at)
			commits.OnCommit(rows, at)
		}
	}
	ing, err := platform.NewIngest(countingWriter{store, &dupMu, &dups}, platform.IngestOptions{
		Broker: url, ClientID: "kestrel-demo-platform", Fleets: []string{cfg.Device.Fleet},
		BatchWait: 50 * time.Millisecond, OnCommit: onCommit, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return sum, err
	}
	ingCtx, stopIngest := context.WithCancel(context.WithoutCancel(ctx))
	ingDone := make(chan struct{})
	go func() {
		defer close(ingDone)
		_ = ing.Run(ingCtx)
	}()
	defer func() {
		stopIngest()
		<-ingDone
	}()
	for wait := time.Now().Add(10 * time.Second); !ing.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(wait) {
			return sum, errors.New("demo: the platform did not subscribe to the broker")
		}
	}

	var dash *web.Listening
	var login string
	if httpAddr != "" {
		users, pw, err := web.OneTimeLogin(DemoUser, web.RoleSupervisor)
		if err != nil {
			return sum, err
		}
		dash, err = web.Start(ctx, web.HTTPConfig{Addr: httpAddr, Users: users, Plaintext: !o.HTTPS, TLSDir: filepath.Join(dir, "tls"), Commits: commits},
			store, platform.API(store, platform.NewMetrics(), ing.Connected), o.Log)
		if err != nil {
			return sum, fmt.Errorf("demo: dashboard: %w", err)
		}
		defer dash.Close()
		login = pw
	}

	var spooled sync.Map
	a, err := agent.New(cfg, agent.Options{Logger: o.Log, Version: o.Version, OnRecord: func(r kestrel.Record) {
		spooled.Store(key{r.Boot, r.Seq}, true)
	}})
	if err != nil {
		return sum, err
	}
	defer a.Close()

	out.printf("kestrel demo: device %s/%s, boot %d\n", cfg.Device.Fleet, cfg.Device.ID, a.Boot())
	out.printf("  broker   %s (in-process mochi-mqtt)\n", url)
	out.printf("  gps      %s replaying %s at %gx\n", gps.Path(), TrackName, o.Speed)
	out.printf("  radio    %s (LTE modem simulator, 3GPP TS 27.007)\n", modem.Path())
	out.printf("  firmware %s (event socket)\n", cfg.Hooks.Socket)
	out.printf("  spool    %s\n", cfg.Spool.Dir)
	out.printf("  platform %s (SQLite, the same ingest as kestrel-platform serve)\n", dbFile)
	if dash != nil {
		how := "plain HTTP, loopback only"
		if dash.Scheme == "https" {
			how = "HTTPS, self-signed certificate"
		}
		// The password goes to Out (the terminal) once, never to the log.
		out.printf("  dashboard %s://%s/ (%s)\n", dash.Scheme, dash.Addr, how)
		out.printf("            login: %s / %s (made for this run, in memory only)\n", DemoUser, login)
	}
	out.printf("\n")
	out.printf("what the platform stores (decoded, as each transaction commits; [E] = events channel):\n")

	runCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(runCtx) }()

	devCtx, stopDevices := context.WithCancel(ctx)
	script := o.For
	if o.For > 0 {
		devCtx, stopDevices = context.WithTimeout(ctx, o.For)
	} else {
		script = time.Duration(float64(bytes.Count(Track, []byte("RMC,"))) / o.Speed * float64(time.Second))
	}
	defer stopDevices()
	if err := gps.WaitOpen(devCtx); err == nil {
		go func() {
			gps.Run(devCtx)
			if o.For == 0 {
				stopDevices() // the track has ended: so does the demo
			}
		}()
	}
	go firmwareScript(devCtx, cfg.Hooks.Socket, script)
	<-devCtx.Done()

	// The agent stops as SIGTERM stops it: its parts first (so the quiet
	// GPS is a clean stop, not a lost port), then it drains what it
	// spooled (up to 5 s) and exits; the platform then has it all.
	stopAgent()
	agentErr := <-agentDone
	deadline, cancelDrain := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancelDrain()
	stored := func() map[key]bool {
		m := map[key]bool{}
		_ = store.Keys(deadline, cfg.Device.Fleet, func(_ string, boot uint32, seq uint64) { m[key{boot, seq}] = true })
		return m
	}
	for deadline.Err() == nil {
		have, n := stored(), 0
		spooled.Range(func(k, _ any) bool {
			if !have[k.(key)] {
				n++
			}
			return true
		})
		if n == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if agentErr != nil && !errors.Is(agentErr, context.Canceled) {
		return sum, agentErr
	}
	stopIngest()
	<-ingDone

	// The summary, read back from the platform's database.
	rctx := context.WithoutCancel(ctx)
	counts, err := store.Count(rctx, cfg.Device.Fleet)
	if err != nil {
		return sum, err
	}
	gaps, err := store.Gaps(rctx, platform.GapQuery{Fleet: cfg.Device.Fleet})
	if err != nil {
		return sum, err
	}
	devs, err := store.Devices(rctx, cfg.Device.Fleet)
	if err != nil {
		return sum, err
	}
	dupMu.Lock()
	sum = Summary{Records: counts.Total(), Positions: counts.Positions, Events: counts.Events, Duplicates: dups, Gaps: gaps, Database: dbFile}
	dupMu.Unlock()
	for _, d := range devs {
		sum.Messages += int(d.Messages)
		sum.Bytes += int(d.Bytes)
	}
	have := stored()
	spooled.Range(func(k, _ any) bool {
		sum.Spooled++
		if !have[k.(key)] {
			sum.Missing++
		}
		return true
	})
	out.printf("\nsummary (read back from the platform's database):\n")
	out.printf("  records   %d stored (%d positions, %d events, %d other), %d duplicates\n",
		sum.Records, sum.Positions, sum.Events, sum.Records-sum.Positions-sum.Events, sum.Duplicates)
	out.printf("  spooled   %d by the agent, %d not stored\n", sum.Spooled, sum.Missing)
	out.printf("  wire      %d messages, %d payload bytes, %.1f bytes per fix (all records counted)\n",
		sum.Messages, sum.Bytes, sum.BytesPerFix())
	out.printf("  gaps      %d\n", len(sum.Gaps))
	for _, g := range sum.Gaps {
		out.printf("            %s boot %d: seq %d-%d missing\n", g.Device, g.Boot, g.FirstSeq, g.LastSeq)
	}
	if counts.Rejected > 0 {
		return sum, fmt.Errorf("demo: %d payloads did not decode (kept in the rejected table)", counts.Rejected)
	}
	if dash != nil && ctx.Err() == nil {
		out.printf("\nthe dashboard stays up at %s://%s/ until interrupted (Ctrl-C)\n", dash.Scheme, dash.Addr)
		<-ctx.Done()
	}
	return sum, nil
}

// Config is the demo device's configuration: plaintext to a loopback
// broker, no signed config (nothing outside the demo is reachable), every
// fix reported.
func Config(dir, brokerURL, gpsPort, radioPort string) config.Config {
	c := config.Defaults()
	c.Device.ID = "bwv-0042"
	c.Device.Fleet = "demo"
	c.Broker.URLs = []string{brokerURL}
	c.Broker.BatchAge = config.D(2 * time.Second)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.RequireSigned = false
	c.GPS.Port = gpsPort
	c.GPS.Baud = 9600
	c.Radio.Port = radioPort
	c.Radio.Profile = "lte"
	c.Radio.Poll = config.D(2 * time.Second)
	c.Tracking = config.Tracking{}
	c.Hooks.Socket = filepath.Join(dir, "events.sock")
	c.Status.Socket = filepath.Join(dir, "control.sock")
	c.Hooks.AllowUIDs = []int{os.Getuid()}
	c.Hooks.LinkPeriod = config.D(0)
	return c
}

// firmwareScript plays the camera firmware: recording starts, and an
// officer presses the emergency button.
func firmwareScript(ctx context.Context, sock string, d time.Duration) {
	if d <= 0 {
		d = 20 * time.Second
	}
	steps := []struct {
		at  time.Duration
		typ string
		kv  map[string]string
	}{
		{d / 5, "recording_start", map[string]string{"name": "clip-0001"}},
		{d / 2, "emergency", map[string]string{"name": "side-button"}},
		{d * 4 / 5, "recording_stop", map[string]string{"name": "clip-0001"}},
	}
	start := time.Now()
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(s.at))):
		}
		if _, err := eventsock.Send(sock, s.typ, s.kv); err != nil {
			slog.Warn("demo firmware event", "type", s.typ, "err", err)
		}
	}
}

// startBroker runs an in-process MQTT broker on a free loopback port.
func startBroker() (*mochi.Server, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("demo: free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler), InlineClient: true})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		return nil, "", fmt.Errorf("demo: broker: %w", err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "demo", Address: addr})); err != nil {
		return nil, "", fmt.Errorf("demo: broker listen %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, "", fmt.Errorf("demo: broker: %w", err)
	}
	return srv, addr, nil
}

// printer writes decoded arrivals, one JSON line each.
type printer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// committed prints the records of one committed transaction.
func (p *printer) committed(rows []platform.Row, _ time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range rows {
		r := &rows[i].Record
		p.buf = p.buf[:0]
		if r.Priority >= kestrel.PriorityHigh {
			p.buf = append(p.buf, "[E] "...)
		} else {
			p.buf = append(p.buf, "    "...)
		}
		p.buf = wire.AppendJSON(p.buf, r)
		p.buf = append(p.buf, '\n')
		p.w.Write(p.buf)
	}
}

// countingWriter counts the redelivered records the store skipped.
type countingWriter struct {
	s    *platform.Store
	mu   *sync.Mutex
	dups *int
}

func (c countingWriter) Write(ctx context.Context, b *platform.Batch) (platform.WriteResult, error) {
	res, err := c.s.Write(ctx, b)
	if err == nil {
		c.mu.Lock()
		*c.dups += res.Duplicates
		c.mu.Unlock()
	}
	return res, err
}

// allowAll lets every client connect and use every topic: the demo broker
// listens on loopback only.
type allowAll struct{ mochi.HookBase }

func (*allowAll) ID() string { return "allow-all" }

func (*allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (*allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }
func (*allowAll) OnACLCheck(*mochi.Client, string, bool) bool              { return true }
