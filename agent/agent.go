// Package agent is Kestrel's pipeline and lifecycle: it opens the ports,
// runs the drivers and firmware hooks, stamps every record with (device,
// boot, seq, time), applies the tracking and privacy policy, appends to the
// spool, and runs the MQTT session that drains it.
//
// The agent owns policy (priorities, restarts, backoff, reload); the
// drivers, hooks and transports it runs stay simple.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/identity"
	"github.com/kestrel-edge/kestrel/agent/motion"
	"github.com/kestrel-edge/kestrel/agent/power"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/agent/tracking"
	"github.com/kestrel-edge/kestrel/drivers/gpio"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Options are what the agent needs besides its configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// LogLevel is the level the Logger's handler filters by; log.level
	// sets it live. Nil: the agent filters its Logger by a level of its
	// own (it can then only raise the level above the handler's).
	LogLevel *slog.LevelVar
	// Now is the clock for records that carry no time of their own.
	Now func() time.Time
	// OnRecord, when set, sees every record after it is stamped and
	// spooled (demo and tests).
	OnRecord func(kestrel.Record)
	// GPIOFake, when set, stands in for /dev/gpiochip* (tests; Debian's
	// kernel has no gpio-sim).
	GPIOFake *gpio.FakeChips
	// Selftest runs the fitter's checks for the "selftest" command.
	Selftest func(ctx context.Context, cfg config.Config) (any, error)
	// PrivacyAudit hears every change of the privacy in force (the fleet
	// controller's audit chain); called outside the agent's lock.
	PrivacyAudit func([]tracking.Change)
}

// Agent is one running Kestrel.
type Agent struct {
	opts Options
	log  *slog.Logger

	reloadMu sync.Mutex // serialises Reload
	mu       sync.Mutex // guards cfg, srcs, session and the stamping state
	// cfg is the running config: the only copy. Keys that apply at
	// restart keep their start values here; restartPending lists them.
	cfg            config.Config
	restartPending []config.Change
	enc            []byte
	level          *slog.LevelVar

	spool  *spool.Spool
	id     *identity.Identity // the device key: signs replies and reports
	policy *tracking.Policy
	motion *motion.Detector // driving events from the accelerometer
	power  *power.Policy    // reporting follows ignition and battery
	pw     powerApplier

	boot uint32
	ev   evidenceChain // the hash chain; guarded by mu

	srcs map[string]*runningSource // by name: "gps", "radio", ...
	sess *sessionRunner
	msgr *Messenger

	restartRequested atomic.Bool

	wg        sync.WaitGroup // every goroutine the agent starts
	closeOnce sync.Once
	closed    atomic.Bool
	cancel    context.CancelFunc
	runCtx    context.Context

	stats     Stats
	latest    latest
	vitals    vitals // when the GPS and radio last showed life (LastSign)
	started   time.Time
	startedCh chan struct{} // closed when Run has started everything
}

// Stats count what went through the pipeline.
type Stats struct {
	Emitted  atomic.Uint64 // records offered by sources
	Filtered atomic.Uint64 // positions dropped by tracking or privacy policy
	Spooled  atomic.Uint64 // records appended to the spool
	Failed   atomic.Uint64 // records the spool refused
}

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("agent: closed")

// New opens the spool and prepares the agent; Run starts it.
func New(cfg config.Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	level := opts.LogLevel
	if level == nil {
		level = new(slog.LevelVar)
		opts.Logger = slog.New(&levelHandler{Handler: opts.Logger.Handler(), level: level})
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.Log.Level)); err == nil {
		level.Set(l)
	}
	id, err := identity.Load(identity.KeyFile(cfg), opts.Logger.With("part", "identity"))
	if err != nil {
		return nil, err
	}
	so := spoolOptions(cfg)
	so.Now = opts.Now
	if so.Key, err = loadSpoolKey(SpoolKeyFile(cfg), cfg.Spool.Encrypt, opts.Logger.With("part", "spool")); err != nil {
		return nil, err
	}
	so.Encrypt = cfg.Spool.Encrypt
	sp, err := spool.Open(cfg.Spool.Dir, so, opts.Logger.With("part", "spool"))
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", cfg.Spool.Dir, err)
	}
	a := &Agent{
		opts:      opts,
		startedCh: make(chan struct{}),
		log:       opts.Logger,
		cfg:       cfg,
		spool:     sp,
		id:        id,
		policy:    tracking.New(cfg.Tracking, cfg.Privacy),
		boot:      sp.Boot(),
		srcs:      map[string]*runningSource{},
		level:     level,
	}
	a.policy.SetClock(opts.Now)
	a.policy.SetOwnIdentity(cfg.Radio.ISSI)
	a.policy.OnChange(a.auditPrivacy)
	a.motion = motion.New(cfg.Motion, a.latest.position)
	a.power = power.New(cfg.Power, opts.Now, a.onPowerChange)
	a.pw.lastPoll = cfg.Radio.Poll.Duration
	a.msgr = &Messenger{a: a}
	a.latest.kick = make(chan struct{}, 1)
	a.newEvidence(cfg)
	a.checkpoint(kestrel.CheckpointBoot)
	return a, nil
}

// levelHandler filters a handler by a level that log.level sets live.
type levelHandler struct {
	slog.Handler
	level *slog.LevelVar
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.Handler.Enabled(ctx, l)
}

func (h *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithAttrs(as), level: h.level}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{Handler: h.Handler.WithGroup(name), level: h.level}
}

func spoolOptions(cfg config.Config) spool.Options {
	return spool.Options{
		MaxBytes:     cfg.Spool.MaxBytes,
		MaxAge:       cfg.Spool.MaxAge.Duration,
		SyncInterval: cfg.Spool.SyncInterval.Duration,
		SegmentBytes: segmentBytes(cfg.Spool.MaxBytes),
	}
}

// segmentBytes sizes log segments to a sixteenth of the spool, between
// 64 KiB and 4 MiB: a full disk frees space a whole segment at a time, so
// a small spool on a small partition needs small segments.
func segmentBytes(maxBytes int64) int64 {
	return min(max(maxBytes/16, 64<<10), 4<<20)
}

// Boot is this run's boot id.
func (a *Agent) Boot() uint32 { return a.boot }

// Identity is the device's own key (agent/identity), for the fleet
// controller to sign replies and reports and for evidence checkpoints.
func (a *Agent) Identity() *identity.Identity { return a.id }

// Spool exposes the spool for status reports and tests.
func (a *Agent) Spool() *spool.Spool { return a.spool }

// Config returns the configuration in force: the agent holds the only
// copy, and changes it only through Reload.
func (a *Agent) Config() config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Stats returns the pipeline counters.
func (a *Agent) Stats() *Stats { return &a.stats }

// Run starts every configured part and blocks until ctx is cancelled; then
// it stops the sources, gives the session a moment to drain what is
// waiting, syncs the spool and returns.
func (a *Agent) Run(ctx context.Context) error {
	if a.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A Reload waits until every part has started from the config it saw.
	a.reloadMu.Lock()
	a.mu.Lock()
	a.cancel = cancel
	a.runCtx = ctx
	cfg := a.cfg
	a.mu.Unlock()

	a.log.Info("kestrel starting", "version", a.opts.Version, "device", cfg.Device.ID, "fleet", cfg.Device.Fleet,
		"boot", a.boot, "spool", cfg.Spool.Dir)

	sess, err := a.startSession(ctx, cfg)
	if err != nil {
		a.reloadMu.Unlock()
		return err
	}
	a.mu.Lock()
	a.sess = sess
	a.mu.Unlock()
	a.startSources(ctx, cfg, nil)
	a.reloadMu.Unlock()
	a.started = a.opts.Now()
	a.serveLocal(ctx, cfg.Status.Socket)
	close(a.startedCh)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.publishState(ctx)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.privacyClock(ctx)
	}()

	<-ctx.Done()
	a.log.Info("kestrel stopping: draining")
	a.stopSources()
	a.checkpoint(kestrel.CheckpointShutdown)
	a.mu.Lock()
	sess = a.sess
	a.mu.Unlock()
	if sess != nil {
		sess.stop(a.drainTimeout(), a.pending)
	}
	a.wg.Wait()
	if a.restartRequested.Load() {
		return ErrRestart
	}
	return nil
}

// drainTimeout bounds how long SIGTERM waits for the spool to empty: long
// enough to send a normal backlog on a live link, short enough for
// systemd's stop timeout.
func (a *Agent) drainTimeout() time.Duration { return 5 * time.Second }

// pending is the number of records not yet acknowledged by the broker.
func (a *Agent) pending() int { return a.spool.Metrics().Records }

// Close stops everything and closes the spool. Safe to call twice.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		a.closed.Store(true)
		a.mu.Lock()
		if a.cancel != nil {
			a.cancel()
		}
		a.mu.Unlock()
		a.wg.Wait()
		err = a.spool.Close()
	})
	return err
}

// Emit is the single entry point of the pipeline: policy, stamp, spool. It
// is safe for concurrent use by every source.
func (a *Agent) Emit(rec kestrel.Record) {
	a.stats.Emitted.Add(1)
	if rec.Time == 0 {
		rec.Time = a.opts.Now().UnixMilli()
	}
	rec.Priority = max(rec.Priority, defaultPriority(&rec))
	a.vitals.observe(&rec, a.opts.Now()) // before the policy: a filtered fix is still a sign of life
	a.power.Observe(&rec)
	// The policy decides under the lock that orders the sequence numbers,
	// and a privacy change it makes (a schedule edge, a zone entered,
	// docked, an own emergency) is spooled as an audit event just ahead
	// of the record: every record after the event was judged under the
	// mode it names.
	a.mu.Lock()
	keep, changes := a.policy.Decide(&rec)
	audits := a.spoolAuditsLocked(changes)
	var err error
	if keep {
		err = a.appendLocked(&rec)
	}
	a.mu.Unlock()
	a.afterAudits(changes, audits)
	if !keep {
		a.stats.Filtered.Add(1)
		return
	}
	a.afterSpool(rec, err)
}

// appendLocked stamps rec, spools it and chains it (agent/evidence.go),
// stamping a checkpoint after it when one is due; a.mu is held.
func (a *Agent) appendLocked(rec *kestrel.Record) error {
	a.stampLocked(rec)
	err := a.spoolLocked(rec)
	if err == nil {
		a.chainLocked(rec)
		a.checkpointDueLocked(rec)
	}
	return err
}

// stampLocked gives a record its envelope: device, boot, seq.
func (a *Agent) stampLocked(rec *kestrel.Record) {
	rec.Device = a.cfg.Device.ID
	rec.Boot = a.boot
	rec.Seq = a.spool.NextSeq()
}

// spoolLocked encodes a stamped record and appends it to the spool.
func (a *Agent) spoolLocked(rec *kestrel.Record) error {
	var err error
	a.enc, err = wire.AppendRecord(a.enc[:0], rec)
	if err != nil {
		return err
	}
	data := append([]byte(nil), a.enc...)
	// The spool ages records by when they reached it, on the agent's
	// clock: a receiver with a bad date (week rollover) or a replayed log
	// must not make fresh records look expired.
	_, err = a.spool.Append(spool.Item{Seq: rec.Seq, Priority: rec.Priority, Time: a.opts.Now().UnixMilli(), Data: data})
	return err
}

// afterSpool counts, logs and shows a record the spool took (or refused).
func (a *Agent) afterSpool(rec kestrel.Record, err error) {
	if err != nil {
		a.stats.Failed.Add(1)
		a.log.Warn("record not spooled", "kind", rec.Kind().String(), "seq", rec.Seq, "err", err)
		return
	}
	a.stats.Spooled.Add(1)
	if prev := a.latest.observe(&rec); rec.Kind() == kestrel.KindGPSStatus {
		a.logGPSState(prev, rec.Body.(*kestrel.GPSStatus))
	}
	if a.opts.OnRecord != nil {
		a.opts.OnRecord(rec)
	}
}

// defaultPriority is the least priority a record of its kind gets. Drivers
// may raise a record's priority (a radio's emergency status), never lower
// it below this.
func defaultPriority(rec *kestrel.Record) kestrel.Priority {
	switch b := rec.Body.(type) {
	case *kestrel.Event:
		switch b.Type {
		case kestrel.EventEmergency:
			return kestrel.PriorityEmergency
		case kestrel.EventTamper, kestrel.EventTaser, kestrel.EventSecurity, kestrel.EventBatteryCritical,
			kestrel.EventRecordingStart, kestrel.EventRecordingStop, kestrel.EventInput, kestrel.EventLocate, kestrel.EventPrivacy:
			return kestrel.PriorityHigh
		}
		return kestrel.PriorityNormal
	case *kestrel.Position, *kestrel.RadioStatus, *kestrel.GPSStatus, *kestrel.Battery, *kestrel.ExecAudit:
		return kestrel.PriorityNormal
	}
	return kestrel.PriorityBulk
}
