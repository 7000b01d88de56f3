package fleetctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Door is the one way the running config changes (agent.Agent): Reload
// applies a whole config live or refuses it, and Config returns the
// config in force. The manager holds no running config of its own.
type Door interface {
	Config() config.Config
	Reload(ctx context.Context, next config.Config) ([]config.Change, error)
}

// Vitals says when the parts a change can break last showed that they
// work (agent.Agent implements it). A door that also implements it gets
// the GPS and the radio health-checked after a change that touched them.
type Vitals interface {
	// LastSign is when part ("gps", "radio") last showed life: valid NMEA
	// sentences from the receiver, an answer from the radio. Zero: not yet.
	LastSign(part string) time.Time
}

// Messenger is the MQTT session as the manager needs it.
type Messenger interface {
	// Publish sends on a channel relative to kestrel/v1/{fleet}/{device}/,
	// at QoS 1, returning after the PUBACK.
	Publish(ctx context.Context, channel string, payload []byte, retained bool) error
	// Subscribe registers h for an absolute topic filter, kept across
	// reconnects.
	Subscribe(topic string, h func(topic string, payload []byte)) error
}

// CommandFunc runs a command. The result is sent back as JSON. A handler
// that must act after its reply is out (restart) returns a Deferred.
type CommandFunc func(ctx context.Context, args map[string]string) (any, error)

// Deferred is a command result whose Then runs once the reply is published
// (or after 10 s if it cannot be).
type Deferred struct {
	Result any
	Then   func()
}

// PrivacyControl is the privacy switch that the "privacy" command drives;
// *tracking.Policy implements it (asserted where the two are wired, in
// cmd/kestrel: this package imports nothing of the agent).
type PrivacyControl interface {
	SetPrivacy(on bool) string
	ClearPrivacy() string
	PrivacyMode() string
}

// PrivacyPersister lets the manager keep the command's override across
// restarts; a PrivacyControl that also implements it (*tracking.Policy)
// gets its override back after a restart.
type PrivacyPersister interface {
	PrivacyOverride() string
	RestoreOverride(string) error
}

// Options configures a Manager. Only Current is required; the rest default
// from it.
type Options struct {
	// Current is the local config (file plus --set) the agent started with.
	Current config.Config
	// Fleet, Device and Groups default to Current's device section.
	Fleet, Device string
	Groups        []string
	// TrustedKeys are added to remote.trusted_keys of the running config.
	TrustedKeys []string
	// StatePath defaults to remote.state_file; "" there too keeps state in
	// memory only (tests).
	StatePath string
	// Connected reports whether a broker session is up. Nil: a successful
	// publish alone proves connectivity.
	Connected func() bool
	// RollbackAfter overrides remote.rollback_after.
	RollbackAfter time.Duration
	// Commands are the handlers by command name (locate, flush, status,
	// selftest, restart); "privacy" is built in when Privacy is set.
	Commands map[string]CommandFunc
	Privacy  PrivacyControl
	// Signer is the device's own key (agent/identity): config reports and
	// command replies go out signed with it. Nil: unsigned.
	Signer fleet.DeviceSigner
	Logger *slog.Logger
	// AuditMax overrides remote.audit_max; CommandMaxAge
	// remote.command_max_age.
	AuditMax      int
	CommandMaxAge time.Duration
	// CheckEvery is the watchdog period (default 1 s).
	CheckEvery time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// maxPendingBoots: a config that has not been confirmed after this many
// restarts is rolled back at start, in case it makes the device crash
// before the watchdog can act.
const maxPendingBoots = 3

// Manager verifies, applies, persists, reports and audits remote config
// and commands. Create it with NewManager, then Attach and Run.
type Manager struct {
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	fleet string
	dev   string

	applyMu sync.Mutex // serialises config changes (Run loop and Reload)

	mu         sync.Mutex
	base       config.Config     // local config (file plus --set)
	start      config.Config     // the config to start with, until a door is attached
	origins    map[string]Origin // where each remotely set key of the layers in force came from
	door       Door
	st         *state
	keys       fleet.Keyring
	msg        Messenger
	subscribed map[string]bool
	deadline   time.Time // rollback deadline while st.Pending != nil
	// probeSince is when the pending change was applied (or the agent
	// restarted with it): the parts it touched must show life after it.
	probeSince time.Time
	// brokerProven: since probeSince, the broker served the fleet-signed
	// desired config in force.
	brokerProven bool
	// vitalsSince is when the door returned from the pending change (or
	// the agent restarted with it): the GPS and the radio it touched must
	// show life after it, from the parts the change started.
	vitalsSince time.Time
	dirty       bool // state changed but not yet saved (rejections)
	// anchorDirty: the anti-rollback state changed since the anchor
	// files were last written.
	anchorDirty bool
	junkSent    time.Time // when the junk summary was last queued
	lastSaved   time.Time
	// savedAuditSeq is the audit seq the state file holds: an entry is
	// published only once the chain head after it is on flash.
	savedAuditSeq  uint64
	savedAuditSent uint64

	lastPubOK atomic.Int64 // unix ns of the last successful publish

	inbox   chan inbound
	outMu   sync.Mutex
	out     []outItem
	outWake chan struct{}
	started atomic.Bool
	wg      sync.WaitGroup
}

type inbound struct {
	topic   string
	payload []byte
	at      time.Time // when it arrived
}

type outItem struct {
	channel  string
	payload  []byte
	retained bool
	sent     func()
	auditSeq uint64 // an audit chain entry, sent from the state (nextAudit)
}

// NewManager loads the persisted state and computes the config to run:
// the local config with the last applied remote config laid over it. Start
// the agent with Config(), or with Options.Current and let Run apply the
// difference live.
func NewManager(opts Options) (*Manager, error) {
	m := &Manager{
		opts:       opts,
		log:        opts.Logger,
		now:        opts.Now,
		fleet:      opts.Fleet,
		dev:        opts.Device,
		base:       config.Clone(opts.Current),
		subscribed: map[string]bool{},
		inbox:      make(chan inbound, 64),
		outWake:    make(chan struct{}, 1),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("part", "remote")
	if m.now == nil {
		m.now = time.Now
	}
	// A change still on probation from before a restart must prove the
	// parts it touched healthy from now on.
	m.probeSince = m.now()
	m.vitalsSince = m.probeSince
	if m.fleet == "" {
		m.fleet = opts.Current.Device.Fleet
	}
	if m.dev == "" {
		m.dev = opts.Current.Device.ID
	}
	if err := fleet.CheckName(m.fleet); err != nil {
		return nil, fmt.Errorf("remote: fleet: %w", err)
	}
	if err := fleet.CheckName(m.dev); err != nil {
		return nil, fmt.Errorf("remote: device: %w", err)
	}
	if m.opts.StatePath == "" {
		m.opts.StatePath = opts.Current.Remote.StateFile
	}
	st, err := loadState(m.opts.StatePath)
	if err != nil {
		// Keep the evidence, start afresh, and say so in the audit log.
		aside := fmt.Sprintf("%s.corrupt-%d", m.opts.StatePath, m.now().Unix())
		m.log.Error("remote state unreadable: starting afresh", "err", err, "moved_to", aside)
		_ = os.Rename(m.opts.StatePath, aside)
		st = &state{Format: stateFormat}
		m.st = st
		m.audit(fleet.AuditEntry{Kind: "state", Result: "reset", Error: err.Error()})
	}
	m.st = st
	if m.st.Seen == nil {
		m.st.Seen = map[string]string{}
	}
	if m.st.Commands == nil {
		m.st.Commands = map[string]int64{}
	}
	m.restorePrivacy()

	if m.st.Layers == nil {
		m.st.Layers = map[string]*appliedConfig{}
	}
	if m.st.GoodLayers == nil {
		m.st.GoodLayers = map[string]*appliedConfig{}
	}
	// Anti-rollback state: the copy in the state file and the two anchor
	// files, merged, so that no single lost or corrupt file lowers a
	// high-water or forgets a revoked key.
	anc, problems := loadAnchors(m.opts.StatePath)
	st.Anchor.fill()
	stored := anc.Gen > 0 || st.Anchor.Gen > 0
	for s, v := range st.HighWater {
		st.Anchor.merge(anchor{HighWater: map[string]uint64{s: v}})
	}
	st.HighWater = nil
	st.Anchor.merge(anc)
	if stored && len(problems) > 0 && m.opts.StatePath != "" {
		m.log.Warn("anti-rollback state repaired from its other copies", "problems", problems)
		m.audit(fleet.AuditEntry{Kind: "state", Result: "repaired", Error: strings.Join(problems, "; ")})
	}
	m.anchorDirty = true
	m.localKeys(m.base.Remote.TrustedKeys)

	// Reports wait until the start config is known: they carry its version.
	var reports []fleet.Report
	var audits []fleet.AuditEntry
	if st.Pending != nil {
		st.PendingBoots++
		if st.PendingBoots > maxPendingBoots {
			bad := st.Pending
			st.Pending, st.PendingBoots = nil, 0
			st.Layers = cloneLayers(st.GoodLayers)
			st.RolledBack = append(st.RolledBack, bad.Digest)
			delete(st.Anchor.Digest, bad.Scope)
			reason := fmt.Sprintf("%s version %d not confirmed after %d restarts; restored the last good config", bad.Scope, bad.Version, maxPendingBoots)
			m.log.Error("remote config rolled back at start", "version", bad.Version, "reason", reason)
			reports = append(reports, fleet.Report{Version: bad.Version, Status: fleet.StatusRolledBack, Errors: []fleet.ReportError{{Error: reason}}, Scope: bad.Scope, KeyID: bad.KeyID})
			audits = append(audits, fleet.AuditEntry{Kind: "rollback", Scope: bad.Scope, KeyID: bad.KeyID, Version: bad.Version, Result: fleet.StatusRolledBack, Error: reason})
		}
	}
	m.start = m.base
	for i, layers := range []map[string]*appliedConfig{st.Layers, st.GoodLayers} {
		c, origins, err := m.compose(m.base, layers)
		if err == nil {
			err = c.Validate() // the agent starts with it: it must be whole
		}
		if err != nil {
			// The local file changed underneath so that the remote config
			// no longer fits: fall back (last good, then local) and say why.
			m.log.Error("persisted remote config no longer valid over the local config", "err", err)
			reports = append(reports, fleet.Report{Status: fleet.StatusRejected, Errors: fleet.ReportErrors(err)})
			audits = append(audits, fleet.AuditEntry{Kind: "config", Result: fleet.StatusRejected, Error: err.Error()})
			if i == 0 {
				st.Pending = nil
				st.Layers = cloneLayers(st.GoodLayers)
			} else {
				st.Layers, st.GoodLayers = map[string]*appliedConfig{}, map[string]*appliedConfig{}
			}
			continue
		}
		m.start, m.origins = c, origins
		break
	}
	if len(st.UnsentReport) > 0 && len(reports) == 0 {
		u := st.UnsentReport
		m.enqueue(outItem{channel: "config/reported", payload: u, retained: true, sent: func() {
			m.mu.Lock()
			if string(m.st.UnsentReport) == string(u) {
				m.st.UnsentReport = nil
				m.dirty = true
			}
			m.mu.Unlock()
		}})
	}
	for _, r := range reports {
		m.report(r)
	}
	for _, a := range audits {
		m.audit(a)
	}
	if err := m.rebuildKeys(m.start); err != nil {
		return nil, err
	}
	if m.base.Remote.RequireSigned {
		if err := m.thresholdsReachable(m.start); err != nil {
			m.log.Warn("signature threshold cannot be met: every remote config or command it covers will be refused", "err", err)
		}
	}
	if err := m.saveLocked(); err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	return m, nil
}

// SetHandlers gives the manager the command handlers and the privacy
// switch of an agent made after it (the agent starts from StartConfig).
// Call it before Run.
func (m *Manager) SetHandlers(cmds map[string]CommandFunc, privacy PrivacyControl) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.Commands, m.opts.Privacy = cmds, privacy
	m.restorePrivacy()
}

// SetSigner gives the manager the device key of an agent made after it;
// call it before Run. Reports and replies are signed when published, so
// those queued earlier go out signed too.
func (m *Manager) SetSigner(s fleet.DeviceSigner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opts.Signer = s
}

// restorePrivacy re-applies the privacy command's saved override.
func (m *Manager) restorePrivacy() {
	if pp, ok := m.opts.Privacy.(PrivacyPersister); ok && m.st.Privacy != "" {
		if err := pp.RestoreOverride(m.st.Privacy); err != nil {
			m.log.Warn("saved privacy override ignored", "err", err)
		}
	}
}

// compose lays the layers over base for this device.
func (m *Manager) compose(base config.Config, layers map[string]*appliedConfig) (config.Config, map[string]Origin, error) {
	return compose(base, m.dev, m.opts.Groups, layers)
}

// StartConfig is the config to start the agent with: the local config
// with the applied remote config over it.
func (m *Manager) StartConfig() config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return config.Clone(m.start)
}

// current is the config in force: the door's once attached. Callers may
// hold m.mu (the door never calls back into the manager).
func (m *Manager) current() config.Config {
	if m.door != nil {
		return m.door.Config()
	}
	return m.start
}

// Version is the remote config version in force (0: local only).
func (m *Manager) Version() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current().Version
}

// Audit returns a copy of the audit log kept on the device, oldest first.
func (m *Manager) Audit() []fleet.AuditEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.st.Audit)
}

// rebuildKeys makes the keyring: the keys of c's remote.trusted_keys,
// Options.TrustedKeys and every key trusted so far (the anchor), less the
// revoked ones. Callers hold m.mu (or own m exclusively).
func (m *Manager) rebuildKeys(c config.Config) error {
	kr, err := m.keyringFor(c)
	if err != nil {
		return err
	}
	a := &m.st.Anchor
	trusted := make([]string, 0, len(kr))
	for _, k := range kr {
		trusted = append(trusted, k.Entry)
	}
	slices.Sort(trusted)
	if !slices.Equal(trusted, a.Trusted) {
		a.Trusted = trusted
		m.anchorDirty = true
	}
	m.keys = kr
	return nil
}

// keyringFor is the keyring c would give: its remote.trusted_keys,
// Options.TrustedKeys and every key trusted so far, less the revoked
// ones. Callers hold m.mu (or own m exclusively).
func (m *Manager) keyringFor(c config.Config) (fleet.Keyring, error) {
	a := &m.st.Anchor
	kr, err := fleet.NewKeyring(append(append(slices.Clone(c.Remote.TrustedKeys), m.opts.TrustedKeys...), a.Trusted...))
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	for kid := range kr {
		if slices.Contains(a.Revoked, kid) {
			delete(kr, kid)
		}
	}
	return kr, nil
}

// thresholdsReachable: c's signature thresholds can be met by the keys it
// would trust, or the device could never be configured (or commanded)
// remotely again.
func (m *Manager) thresholdsReachable(c config.Config) error {
	m.mu.Lock()
	kr, err := m.keyringFor(c)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	for _, t := range []struct {
		path, role string
		n          int
	}{{"remote.config_threshold", fleet.RoleConfig, c.Remote.ConfigThreshold}, {"remote.command_threshold", fleet.RoleCommands, c.Remote.CommandThreshold}} {
		if have := kr.WithRole(t.role); have < t.n {
			return &config.FieldError{Path: t.path, Err: fmt.Errorf("%w: %d, but only %d trusted key(s) have the %s role", config.ErrInvalidValue, t.n, have, t.role)}
		}
	}
	return nil
}

// localKeys follows the local file's remote.trusted_keys: a key gone from
// it since last seen is revoked; a key new in it is trusted again.
// Callers hold m.mu (or own m exclusively).
func (m *Manager) localKeys(keys []string) {
	a := &m.st.Anchor
	now := keyIDs(keys)
	if gone := dropped(a.Local, now); len(gone) > 0 {
		a.revoke(gone...)
	}
	if added := dropped(now, a.Local); len(added) > 0 {
		a.unrevoke(added...)
	}
	if !slices.Equal(now, a.Local) {
		a.Local = now
	}
	m.anchorDirty = true
}

// remoteKeys follows a verified config's effect on remote.trusted_keys:
// keys it removed from the effective list are revoked; the keys it lists
// itself (when this scope sets the key) are trusted again. Callers hold
// m.mu.
func (m *Manager) remoteKeys(scope string, old, next config.Config, origins map[string]Origin) {
	a := &m.st.Anchor
	o, n := keyIDs(old.Remote.TrustedKeys), keyIDs(next.Remote.TrustedKeys)
	if gone := dropped(o, n); len(gone) > 0 {
		a.revoke(gone...)
		m.anchorDirty = true
	}
	if org, ok := origins["remote.trusted_keys"]; ok && org.Scope == scope {
		a.unrevoke(n...)
		m.anchorDirty = true
	}
}

func (m *Manager) groups(c config.Config) []string {
	if m.opts.Groups != nil {
		return m.opts.Groups
	}
	return c.Device.Group
}

func (m *Manager) prefix() string { return fleet.Prefix(m.fleet) }

// Attach connects the manager to the agent's door and messenger and
// subscribes to the desired-config topics (device, each group, _all) and
// the command topic; group subscriptions follow later changes of
// device.groups. Call it once, before Run.
func (m *Manager) Attach(door Door, msg Messenger) error {
	m.mu.Lock()
	m.door, m.msg = door, msg
	m.mu.Unlock()
	m.wakePublisher()
	return m.subscribe()
}

func (m *Manager) subscribe() error {
	m.mu.Lock()
	msg := m.msg
	topics := []string{
		fleet.Device(m.fleet, m.dev).Topic(),
		fleet.AllDevices(m.fleet).Topic(),
		fleet.DeviceTopic(m.fleet, m.dev, fleet.ChannelCmd),
	}
	for _, g := range m.groups(m.current()) {
		topics = append(topics, fleet.Group(m.fleet, g).Topic())
	}
	var todo []string
	for _, t := range topics {
		if !m.subscribed[t] {
			todo = append(todo, t)
		}
	}
	m.mu.Unlock()
	if msg == nil {
		return nil
	}
	var errs []error
	for _, t := range todo {
		if err := msg.Subscribe(t, m.receive); err != nil {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		m.subscribed[t] = true
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

// receive runs on the session's handler queue: it only queues.
func (m *Manager) receive(topic string, payload []byte) {
	select {
	case m.inbox <- inbound{topic, slices.Clone(payload), m.now()}:
	default:
		m.log.Warn("remote inbox full: message dropped", "topic", topic)
	}
}

// Run processes messages, runs the rollback watchdog and publishes
// reports, replies and audit entries until ctx ends. It first applies the
// persisted remote config if the agent started with the local one.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("remote: Run called twice")
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.publisher(ctx)
	}()
	defer m.wg.Wait()

	m.startup(ctx)
	every := m.opts.CheckEvery
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			if m.dirty || m.st.AuditSent != m.savedAuditSent {
				m.saveLocked()
			}
			m.mu.Unlock()
			return nil
		case in := <-m.inbox:
			m.handle(ctx, in)
		case <-tick.C:
			m.tick(ctx)
		}
	}
}

func (m *Manager) startup(ctx context.Context) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	running, target := m.current(), m.start
	if m.st.Pending != nil {
		// Probation goes on after a restart, with the grace of the last
		// good config, not of the one under test.
		good, _, err := m.compose(m.base, m.st.GoodLayers)
		if err != nil {
			good = m.base
		}
		m.deadline = m.now().Add(m.rollbackAfter(good))
	}
	m.mu.Unlock()
	if len(config.ChangedPaths(running, target)) == 0 {
		return
	}
	// The agent was started with another config than StartConfig (tests):
	// bring it to the persisted one through the door.
	if _, err := m.apply(ctx, target); err != nil {
		m.log.Error("persisted remote config failed to apply: running the local config", "version", target.Version, "err", err)
		m.mu.Lock()
		m.report(fleet.Report{Version: target.Version, Status: fleet.StatusRejected, Errors: fleet.ReportErrors(err)})
		m.audit(fleet.AuditEntry{Kind: "config", Version: target.Version, Result: fleet.StatusRejected, Error: err.Error()})
		m.st.Pending, m.st.Layers, m.st.GoodLayers = nil, map[string]*appliedConfig{}, map[string]*appliedConfig{}
		m.origins = nil
		m.saveLocked()
		m.mu.Unlock()
	}
}

// apply goes through the door.
func (m *Manager) apply(ctx context.Context, next config.Config) ([]config.Change, error) {
	m.mu.Lock()
	door := m.door
	m.mu.Unlock()
	if door == nil {
		return nil, errors.New("remote: not attached to the agent")
	}
	return door.Reload(ctx, next)
}

func (m *Manager) rollbackAfter(c config.Config) time.Duration {
	if m.opts.RollbackAfter > 0 {
		return m.opts.RollbackAfter
	}
	if d := c.Remote.RollbackAfter.Duration; d > 0 {
		return d
	}
	return 2 * time.Minute
}

func (m *Manager) handle(ctx context.Context, in inbound) {
	rest, ok := strings.CutPrefix(in.topic, m.prefix())
	if !ok {
		return
	}
	switch {
	case rest == m.dev+"/cmd":
		m.handleCommand(ctx, in.payload)
	case rest == m.dev+"/config/desired":
		m.handleConfig(ctx, "device/"+m.dev, in)
	case rest == "_all/config/desired":
		m.handleConfig(ctx, "all", in)
	case strings.HasPrefix(rest, "_group/") && strings.HasSuffix(rest, "/config/desired"):
		g := strings.TrimSuffix(strings.TrimPrefix(rest, "_group/"), "/config/desired")
		m.mu.Lock()
		member := slices.Contains(m.groups(m.current()), g)
		m.mu.Unlock()
		if member { // a group we left since subscribing is ignored
			m.handleConfig(ctx, "group/"+g, in)
		}
	}
}

// handleConfig verifies, validates, applies, persists, reports and audits
// one desired-config message.
func (m *Manager) handleConfig(ctx context.Context, scope string, in inbound) {
	payload := in.payload
	if len(payload) == 0 {
		return // a cleared retained topic
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	d := digest(payload)
	m.proveBroker(scope, d, in)
	m.mu.Lock()
	if m.st.Seen[scope] == d {
		m.mu.Unlock()
		return // the retained copy again, after a reconnect
	}
	m.st.Seen[scope] = d
	m.dirty = true
	if m.isCurrentOrRolledBack(d) {
		// A stray message on the topic made the retained copy look new;
		// it is the config already in force (or already rolled back).
		m.mu.Unlock()
		return
	}
	running, base := m.current(), m.base
	requireSigned := base.Remote.RequireSigned
	threshold := running.Remote.ConfigThreshold
	keys := m.keys
	replayed := m.st.historyContains(d)
	// A state migrated from format 1 floors every scope at its one mark.
	highWater := max(m.st.Anchor.HighWater[scope], m.st.Anchor.HighWater[legacyScopes])
	layers := cloneLayers(m.st.Layers)
	// The state file was lost but the anchor knows this envelope as the
	// one in force at the high-water: its retained copy is taken back.
	restore := layers[scope] == nil && m.st.Anchor.Digest[scope] == d
	m.mu.Unlock()

	entry := fleet.AuditEntry{Kind: "config", Scope: scope}
	reject := func(version uint64, err error) {
		entry.Version, entry.Result, entry.Error = version, fleet.StatusRejected, err.Error()
		m.log.Warn("remote config rejected", "scope", scope, "version", version, "kid", entry.KeyID, "err", err)
		m.mu.Lock()
		m.report(fleet.Report{Version: version, Status: fleet.StatusRejected, Errors: fleet.ReportErrors(err), Scope: scope, KeyID: entry.KeyID})
		m.audit(entry)
		m.mu.Unlock()
	}

	env, err := fleet.DecodeConfig(payload)
	if err != nil {
		m.rejectJunkConfig(scope, 0, err)
		return
	}
	entry.KeyID = env.KeyID
	signers, err := keys.VerifyConfigN(env, requireSigned, threshold)
	if err != nil {
		m.rejectJunkConfig(scope, env.Version, err)
		return
	}
	entry.Verified, entry.Signers = len(signers) > 0, signers
	entry.By = auditBy(signers)
	if len(signers) > 0 {
		entry.KeyID = signers[0]
	}
	if env.Fleet != m.fleet || env.Scope != scope {
		reject(env.Version, fmt.Errorf("%w: signed for %s, arrived on %s", fleet.ErrWrongTarget, env.Target(), fleet.Target{Fleet: m.fleet, Scope: scope}))
		return
	}
	if !restore || env.Version != highWater {
		if replayed {
			reject(env.Version, fmt.Errorf("%w: version %d", fleet.ErrReplay, env.Version))
			return
		}
		if err := checkVersion(scope, env.Version, highWater); err != nil {
			reject(env.Version, err)
			return
		}
	}
	// This scope's layer is replaced; the others stay as they are.
	layer := &appliedConfig{Version: env.Version, Scope: scope, KeyID: env.KeyID, Body: string(env.Body), Digest: d, AppliedAt: m.now().UnixMilli()}
	layers[scope] = layer
	next, origins, err := m.compose(base, layers)
	if err != nil {
		reject(env.Version, err)
		return
	}
	if requireSigned && len(next.Remote.TrustedKeys)+len(m.opts.TrustedKeys) == 0 {
		// The device could never be configured remotely again.
		reject(env.Version, &config.FieldError{Path: "remote.trusted_keys", Err: fmt.Errorf("%w: would leave no trusted key", config.ErrInvalidValue)})
		return
	}
	if requireSigned {
		if err := m.thresholdsReachable(next); err != nil {
			reject(env.Version, err) // nor with fewer keys than its thresholds need
			return
		}
	}
	m.mu.Lock()
	good, _, gerr := m.compose(base, m.st.GoodLayers)
	if gerr != nil {
		good = base
	}
	m.mu.Unlock()
	since := m.now()
	changes, err := m.apply(ctx, next)
	if err != nil {
		// The door applies all or nothing: the running config is as it was.
		reject(env.Version, err)
		return
	}

	m.mu.Lock()
	m.remoteKeys(scope, running, next, origins)
	if err := m.rebuildKeys(next); err != nil {
		m.log.Error("trusted keys", "err", err) // Validate checked them; unreachable
	}
	m.st.Anchor.HighWater[scope] = env.Version
	m.st.Anchor.Digest[scope] = d
	m.anchorDirty = true
	m.st.Layers, m.origins = layers, origins
	m.st.Pending = layer
	m.st.PendingBoots = 0
	m.st.PendingNeeds = m.partsTouched(changes, next)
	m.probeSince, m.brokerProven, m.vitalsSince = since, false, m.now()
	m.st.History = append(m.st.History, d)
	if len(m.st.History) > maxHistory {
		m.st.History = m.st.History[len(m.st.History)-maxHistory:]
	}
	// The watchdog's grace comes from the last good config: a config
	// under test (this one, or one before it not yet confirmed) must not
	// be able to extend its own probation.
	m.deadline = m.now().Add(m.rollbackAfter(good))
	entry.Version, entry.Result, entry.Changes = env.Version, fleet.StatusApplied, changes
	entry.Diff = auditDiff(running, next, changes)
	m.audit(entry)
	m.report(fleet.Report{Version: env.Version, Status: fleet.StatusApplied, Scope: scope, KeyID: env.KeyID, Changes: changes})
	m.saveLocked()
	m.mu.Unlock()
	m.log.Info("remote config applied", "scope", scope, "version", env.Version, "kid", env.KeyID, "changes", changes)
	if err := m.subscribe(); err != nil { // groups joined
		m.log.Warn("subscribing to new group topics", "err", err)
	}
}

// partsTouched are the parts a change must prove healthy within its
// probation: the broker, for a live change of broker.*; the GPS and the
// radio, for a live change of gps.* or radio.* that leaves them enabled,
// when the door reports their vitals. (A missing serial device is refused
// before applying, by the door; this catches the one that is there but
// silent: a wrong baud rate, another device on the port.)
func (m *Manager) partsTouched(changes []config.Change, next config.Config) []string {
	_, vitals := m.vitals()
	var out []string
	for _, c := range changes {
		if c.Applies != config.Live {
			continue
		}
		var part string
		switch {
		case c.Section == "broker":
			part = "broker"
		case c.Section == "gps" && vitals && next.GPS.Port != "":
			part = "gps"
		case c.Section == "radio" && vitals && next.Radio.Port != "":
			part = "radio"
		}
		if part != "" && !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	return out
}

// gpsSettle: the receiver's sentences count only from a second after the
// change. A port's buffer still holds sentences sent before it (at the old
// line speed, say), which the restarted driver reads at once.
const gpsSettle = time.Second

// vitals is the door's Vitals, if it has them. Callers may hold m.mu.
func (m *Manager) vitals() (Vitals, bool) {
	v, ok := m.door.(Vitals)
	return v, ok
}

// unhealthyLocked lists, for the pending change, the parts it touched
// that have not yet proved healthy. Callers hold m.mu.
func (m *Manager) unhealthyLocked() []string {
	var out []string
	cur := m.current()
	if slices.Contains(m.st.PendingNeeds, "broker") && !m.brokerProven {
		out = append(out, fmt.Sprintf("broker %s did not serve the fleet-signed desired config", strings.Join(cur.Broker.URLs, ",")))
	}
	v, ok := m.vitals()
	if !ok {
		return out
	}
	if slices.Contains(m.st.PendingNeeds, "gps") && v.LastSign("gps").Before(m.vitalsSince.Add(gpsSettle)) {
		out = append(out, fmt.Sprintf("gps %s (baud %d) sent no valid NMEA sentence", cur.GPS.Port, cur.GPS.Baud))
	}
	if slices.Contains(m.st.PendingNeeds, "radio") && v.LastSign("radio").Before(m.vitalsSince) {
		out = append(out, fmt.Sprintf("radio %s (%s) did not answer", cur.Radio.Port, cur.Radio.Profile))
	}
	return out
}

// proveBroker: while a change to broker.* is on probation, a desired
// config that arrived after the apply, verifies under a trusted key with
// the config role, is addressed to this fleet and scope, and is the very
// envelope in force at that scope, proves that the broker now connected
// is the fleet's. A reachable broker that does not serve it (a wrong or
// hostile listener) never proves it, and the change is rolled back.
func (m *Manager) proveBroker(scope, d string, in inbound) {
	m.mu.Lock()
	layer := m.st.Layers[scope]
	need := m.st.Pending != nil && slices.Contains(m.st.PendingNeeds, "broker") && !m.brokerProven &&
		!in.at.Before(m.probeSince) && layer != nil && layer.Digest == d
	keys := m.keys
	requireSigned := m.base.Remote.RequireSigned
	threshold := m.current().Remote.ConfigThreshold
	m.mu.Unlock()
	if !need {
		return
	}
	env, err := fleet.DecodeConfig(in.payload)
	if err != nil || env.Fleet != m.fleet || env.Scope != scope {
		return
	}
	// Unsigned proof only where unsigned configs are allowed at all
	// (remote.require_signed = false, a local-only setting).
	if _, err := keys.VerifyConfigN(env, requireSigned, threshold); err != nil {
		return
	}
	m.mu.Lock()
	m.brokerProven = true
	m.mu.Unlock()
	m.log.Info("broker proved it is the fleet's: it serves the signed desired config in force", "scope", scope, "version", env.Version)
}

// rejectJunkConfig refuses an unverified config: counted in the junk
// summary rather than audited one by one. It is still reported, so that a
// fleet manager whose push was malformed learns why.
func (m *Manager) rejectJunkConfig(scope string, version uint64, err error) {
	m.log.Warn("unverified remote config refused", "scope", scope, "err", err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.junk(err)
	m.report(fleet.Report{Version: version, Status: fleet.StatusRejected, Errors: fleet.ReportErrors(err), Scope: scope})
}

// isCurrentOrRolledBack: callers hold m.mu.
func (m *Manager) isCurrentOrRolledBack(d string) bool {
	for _, a := range m.st.Layers {
		if a.Digest == d {
			return true
		}
	}
	return slices.Contains(m.st.RolledBack, d)
}

// historyContains reports whether an envelope with this digest was applied.
func (st *state) historyContains(d string) bool { return slices.Contains(st.History, d) }

// tick runs the watchdog: confirm a pending config once a broker is
// reachable, or roll it back when the grace has passed.
func (m *Manager) tick(ctx context.Context) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	if o, ok := m.msg.(interface{ Oversize() uint64 }); ok {
		if n := o.Oversize(); n > m.st.Junk.Oversize {
			m.junkN("oversize", n-m.st.Junk.Oversize)
			m.st.Junk.Oversize = n
		}
	}
	m.publishJunk(false)
	p := m.st.Pending
	if p == nil {
		if m.dirty && m.now().Sub(m.lastSaved) >= 5*time.Second {
			m.saveLocked() // rejections, rate-limited against floods
		}
		m.mu.Unlock()
		return
	}
	appliedAt := time.UnixMilli(p.AppliedAt)
	published := time.Unix(0, m.lastPubOK.Load())
	connected := m.opts.Connected == nil || m.opts.Connected()
	reached := connected && published.After(appliedAt)
	unhealthy := m.unhealthyLocked()
	if reached && len(unhealthy) == 0 {
		m.st.GoodLayers, m.st.Pending, m.st.PendingBoots, m.st.PendingNeeds = cloneLayers(m.st.Layers), nil, 0, nil
		m.saveLocked()
		m.mu.Unlock()
		m.log.Info("remote config confirmed: broker reachable and the parts it touched healthy", "version", p.Version)
		return
	}
	if m.now().Before(m.deadline) {
		m.mu.Unlock()
		return
	}
	// Roll back to the last good config.
	grace := m.deadline.Sub(appliedAt).Round(time.Second)
	good := cloneLayers(m.st.GoodLayers)
	to, origins, err := m.compose(m.base, good)
	if err != nil {
		to, good, origins = m.base, map[string]*appliedConfig{}, nil
	}
	from := m.current()
	m.mu.Unlock()

	restored, applyErr := m.apply(ctx, to)
	why := "no broker reachable"
	if reached {
		why = strings.Join(unhealthy, ", ")
	}
	reason := fmt.Sprintf("%s for %s after applying %s version %d; restored the last good config (version %d)", why, grace, p.Scope, p.Version, to.Version)
	if applyErr != nil {
		reason += fmt.Sprintf(" (restore failed: %v)", applyErr)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.rebuildKeys(to)
	m.st.Pending, m.st.Layers, m.st.GoodLayers, m.st.PendingBoots, m.st.PendingNeeds = nil, good, cloneLayers(good), 0, nil
	m.origins = origins
	m.st.RolledBack = append(m.st.RolledBack, p.Digest)
	if m.st.Anchor.Digest[p.Scope] == p.Digest {
		delete(m.st.Anchor.Digest, p.Scope)
		m.anchorDirty = true
	}
	if len(m.st.RolledBack) > maxHistory {
		m.st.RolledBack = m.st.RolledBack[1:]
	}
	m.log.Error("remote config rolled back", "version", p.Version, "reason", reason)
	m.report(fleet.Report{Version: p.Version, Status: fleet.StatusRolledBack, Errors: []fleet.ReportError{{Error: reason}}, Scope: p.Scope, KeyID: p.KeyID})
	m.audit(fleet.AuditEntry{Kind: "rollback", Scope: p.Scope, KeyID: p.KeyID, Version: p.Version, Result: fleet.StatusRolledBack, Error: reason,
		Changes: restored, Diff: auditDiff(from, to, restored)})
	m.saveLocked()
}

// ReloadLocal lays the remote config over a new local config (SIGHUP) and
// applies it through the door, live, or refuses it whole.
func (m *Manager) ReloadLocal(ctx context.Context, local config.Config) ([]config.Change, error) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	layers := cloneLayers(m.st.Layers)
	m.mu.Unlock()
	next, origins, err := m.compose(local, layers)
	if err != nil {
		return nil, fmt.Errorf("reload: the remote config does not fit the new local config: %w", err)
	}
	m.mu.Lock()
	from := m.current()
	m.mu.Unlock()
	changed, err := m.apply(ctx, next)
	if err != nil {
		return changed, fmt.Errorf("reload refused: %w", err)
	}
	m.mu.Lock()
	m.base = config.Clone(local)
	m.origins = origins
	m.localKeys(local.Remote.TrustedKeys)
	_ = m.rebuildKeys(next)
	m.audit(fleet.AuditEntry{Kind: "reload", Version: next.Version, Result: fleet.StatusApplied, By: []string{fleet.ByLocal},
		Changes: changed, Diff: auditDiff(from, next, changed)})
	m.saveLocked()
	m.mu.Unlock()
	if err := m.subscribe(); err != nil {
		m.log.Warn("subscribing to new group topics", "err", err)
	}
	return changed, nil
}

// report queues the retained config/reported message. Callers hold m.mu.
func (m *Manager) report(r fleet.Report) {
	r.Device, r.Fleet = m.dev, m.fleet
	cur := m.current()
	r.Running = cur.Version
	r.Groups = m.groups(cur)
	r.Layers = map[string]uint64{}
	for s, a := range m.st.Layers {
		r.Layers[s] = a.Version
	}
	r.Effective = effectiveKeys(cur, m.origins)
	r.Time = m.now().UnixMilli()
	b, _ := json.Marshal(&r)
	// Kept in the state until the broker has it, so a report made just
	// before a shutdown is sent after the restart.
	m.st.UnsentReport = b
	m.dirty = true
	m.enqueue(outItem{channel: "config/reported", payload: b, retained: true, sent: func() {
		m.mu.Lock()
		if string(m.st.UnsentReport) == string(b) {
			m.st.UnsentReport = nil
			m.dirty = true
		}
		m.mu.Unlock()
	}})
}

func (m *Manager) saveLocked() error {
	if m.anchorDirty {
		// The anchors first: a crash before the state file is written
		// leaves the high-water raised, never lowered.
		m.st.Anchor.Gen++
		if err := saveAnchors(m.opts.StatePath, m.st.Anchor); err != nil {
			m.log.Error("saving anti-rollback state", "err", err)
		} else {
			m.anchorDirty = false
		}
	}
	if err := m.st.save(m.opts.StatePath); err != nil {
		m.log.Error("saving remote state", "err", err)
		return err
	}
	m.savedAuditSeq, m.savedAuditSent = m.st.AuditSeq, m.st.AuditSent
	m.dirty = false
	m.lastSaved = m.now()
	return nil
}
