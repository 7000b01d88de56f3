package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/fleetctl"
	"github.com/kestrel-edge/kestrel/agent/identity"
	"github.com/kestrel-edge/kestrel/agent/selftest"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// oneCore runs the agent's goroutines on one core unless GOMAXPROCS says
// otherwise. The agent needs about 1% of a core; spread over several, the
// runtime keeps waking idle threads to hand work between them. Measured
// (docs/benchmarks.md, footprint): CPU 1.16% instead of 1.97% under load,
// wakeups 587/s instead of 903/s, 43/s instead of 63/s idle. Blocking system
// calls (serial reads, fsync) still run beside it: the runtime hands the
// core on while a thread waits in the kernel.
func oneCore() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// exConfig is the exit status for a config that cannot be read or is not
// valid (EX_CONFIG in sysexits.h).
const exConfig = 78

// setFlags collects repeated --set key=value overrides.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// agentGCPercent is the agent's GOGC unless the environment sets one.
// The agent's live heap is small and steady (about 2 MiB under load), so
// Go's default (the heap may double before a collection) spends a third of
// the agent's resident memory on garbage; at 50 the heap grows by half,
// which `make footprint` measured at 12.9 MiB against 14.1 MiB resident
// under load, for GC work well under 0.1 % of a core at the agent's
// allocation rate (docs/benchmarks.md).
const agentGCPercent = 50

func runRun(args []string, s stdio) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
	fs := flag.NewFlagSet("kestrel run", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	path := fs.String("config", "", "configuration `FILE` (TOML); kestrel config defaults prints a template")
	var sets setFlags
	fs.Var(&sets, "set", "override a config key, e.g. --set gps.baud=9600 (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel run --config FILE [--set key=value]...\n\n"+
			"Runs the agent until SIGTERM or SIGINT (drain for up to 5 s, then exit).\n"+
			"SIGHUP re-reads the config file and applies what changed live, or rejects\n"+
			"the whole change. Under systemd (Type=notify) it reports READY, STOPPING and\n"+
			"watchdog pings. Exit status: 0 stopped, 1 failed, 2 usage, 78 bad config.\n\n"+
			"flags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return fmt.Errorf("%w: --config FILE is required", errUsage)
	}
	local, err := config.Load(*path, sets)
	if err != nil {
		// EX_CONFIG (sysexits.h): the unit's RestartPreventExitStatus
		// keeps systemd from restarting a device that is not configured.
		fmt.Fprintf(s.stderr, "kestrel run: %v\n", err)
		return subcmd.ExitStatus(exConfig)
	}
	level := new(slog.LevelVar)
	log := newLogger(s, local.Log, level)
	if local.Remote.RequireSigned && len(local.Remote.TrustedKeys) == 0 {
		log.Warn("remote.trusted_keys is empty: every remote config and command will be refused (kestrelctl keygen makes a fleet key)")
	}
	oneCore()
	// The fleet controller decides the config to start with: the local
	// one with the persisted remote config laid over it. From then on the
	// agent holds the running config and changes it only through Reload.
	ctl, err := fleetctl.NewManager(fleetctl.Options{Current: local, Logger: log})
	if err != nil {
		return err
	}
	a, err := agent.New(ctl.StartConfig(), agent.Options{Logger: log, LogLevel: level, Version: version,
		Selftest: func(ctx context.Context, cfg config.Config) (any, error) {
			// The agent holds its serial ports and GPIO lines; the
			// remote self-test reports them from the running agent's
			// state instead of opening them twice.
			return selftest.Run(ctx, cfg, selftest.Options{InUse: []string{"gps", "radio", "gpio"}}), nil
		},
		PrivacyAudit: privacyAudit(ctl)})
	if err != nil {
		return err
	}
	defer a.Close()
	ctl.SetHandlers(fleetCommands(a), a.PrivacySwitch())
	ctl.SetSigner(a.Identity())
	if err := ctl.Attach(a, a.Messenger()); err != nil {
		log.Warn("remote configuration: subscribe", "err", err)
	}
	reload := func(ctx context.Context) ([]config.Change, error) {
		local, err := config.Load(*path, sets)
		if err != nil {
			return nil, err
		}
		return ctl.ReloadLocal(ctx, local)
	}
	err = runWithSignals(s.ctx, a, ctl, reload, log)
	if errors.Is(err, agent.ErrBrokerConfig) {
		// Like a config that does not load: systemd must not restart it.
		fmt.Fprintf(s.stderr, "kestrel run: %v\n", err)
		return subcmd.ExitStatus(exConfig)
	}
	return err
}

// privacyAudit enters the agent's privacy changes in the fleet
// controller's audit chain.
func privacyAudit(ctl *fleetctl.Manager) func([]tracking.Change) {
	return func(changes []tracking.Change) {
		out := make([]fleetctl.PrivacyChange, 0, len(changes))
		for _, c := range changes {
			mode, was := c.Mode, c.Was
			if c.Lifted {
				mode = "lifted"
			}
			if c.WasLifted {
				was = "lifted"
			}
			out = append(out, fleetctl.PrivacyChange{Mode: mode, Was: was, Cause: c.Cause})
		}
		ctl.AuditPrivacy(out...)
	}
}

// fleetCommands are the handlers for signed fleet commands: the agent's,
// and restart, which exits once its reply is out.
func fleetCommands(a *agent.Agent) map[string]fleetctl.CommandFunc {
	cmds := map[string]fleetctl.CommandFunc{}
	for name, h := range a.Commands() {
		cmds[name] = h
	}
	cmds["restart"] = func(context.Context, map[string]string) (any, error) {
		return fleetctl.Deferred{Result: map[string]any{"restarting": true}, Then: a.RequestRestart}, nil
	}
	return cmds
}

// runWithSignals runs the agent and its fleet controller until SIGTERM or
// SIGINT; SIGHUP re-reads the local file and applies it through the
// controller (which lays the fleet's config over it) and the agent's one
// door.
func runWithSignals(parent context.Context, a *agent.Agent, ctl *fleetctl.Manager, reload func(context.Context) ([]config.Change, error), log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ctlCtx, stopCtl := context.WithCancel(ctx)
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(ctlCtx) }()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		superviseSystemd(ctx, a, log)
	}()
	for {
		select {
		case <-hup:
			changes, err := reload(ctx)
			if err != nil {
				log.Error("reload refused; the running config is unchanged", "err", err)
			} else {
				log.Info("reload applied", "changes", changes)
			}
		case err := <-done:
			stop()
			<-notified
			stopCtl()
			if cerr := <-ctlDone; cerr != nil {
				log.Error("remote configuration stopped", "err", cerr)
			}
			return err
		}
	}
}

// newLogger builds the daemon's logger: text for a fitter's terminal or
// journald, JSON when asked.
func newLogger(s stdio, c config.Log, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		l = slog.LevelInfo
	}
	level.Set(l)
	ho := &slog.HandlerOptions{Level: level}
	w := s.stderr
	if f, ok := w.(*os.File); ok && toJournal(f) {
		w, ho.ReplaceAttr = journalWriter{f}, dropTime
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// The agent's privacy policy is the switch the fleet's privacy command
// drives, and keeps the command's override across restarts.
var (
	_ fleetctl.PrivacyControl   = (*tracking.Policy)(nil)
	_ fleetctl.PrivacyPersister = (*tracking.Policy)(nil)
)

// The agent is the controller's one door, reports the GPS's and radio's
// signs of life for its after-apply health check, and holds the device
// key that signs reports and replies.
var (
	_ fleetctl.Door      = (*agent.Agent)(nil)
	_ fleetctl.Vitals    = (*agent.Agent)(nil)
	_ fleet.DeviceSigner = (*identity.Identity)(nil)
	_ fleetctl.Messenger = (*agent.Messenger)(nil)
)
