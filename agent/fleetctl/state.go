package fleetctl

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

const stateFormat = 2

// state is what the device keeps across restarts (remote.state_file),
// written with config.WriteAtomic.
type state struct {
	Format int `json:"format"`
	// Layers are the remote configs in force, one per scope ("all",
	// "group/NAME", "device/ID"), each stored and versioned on its own.
	Layers map[string]*appliedConfig `json:"layers,omitempty"`
	// GoodLayers are the layers last confirmed healthy; a rollback
	// restores them.
	GoodLayers map[string]*appliedConfig `json:"good_layers,omitempty"`
	// Pending is the layer applied but not yet confirmed. Nil: none.
	Pending      *appliedConfig `json:"pending,omitempty"`
	PendingBoots int            `json:"pending_boots,omitempty"`
	// PendingNeeds are the parts the pending change touched, which must
	// prove healthy before it is confirmed ("broker").
	PendingNeeds []string `json:"pending_needs,omitempty"`
	// HighWater is the format-2 place of the high-water marks, read once
	// into Anchor.
	HighWater map[string]uint64 `json:"high_water,omitempty"`
	// Anchor is the anti-rollback state (high-water marks, trusted and
	// revoked keys), also kept in the two anchor files.
	Anchor anchor `json:"anchor"`
	// Seen holds, per scope, the digest of the last envelope that arrived
	// on it, so the retained copy re-delivered on every reconnect is not
	// processed (or reported, or audited) again.
	Seen map[string]string `json:"seen,omitempty"`
	// History holds the digests of applied envelopes, newest last, to name
	// a replay as such.
	History    []string         `json:"history,omitempty"`
	RolledBack []string         `json:"rolled_back,omitempty"` // digests, newest last
	Commands   map[string]int64 `json:"commands,omitempty"`    // request id -> issued, ms
	Privacy    string           `json:"privacy,omitempty"`     // command override
	// UnsentReport is the last config report until the broker acknowledges it.
	UnsentReport []byte             `json:"unsent_report,omitempty"`
	AuditSeq     uint64             `json:"audit_seq"`
	Audit        []fleet.AuditEntry `json:"audit,omitempty"`
	// AuditHead is the digest of the last audit entry (seq AuditSeq): the
	// next entry's prev. AuditSent is the last seq the broker acknowledged;
	// the entries after it in Audit are sent, in order, after a restart
	// too. Audit keeps only the tail: the platform holds the whole chain.
	AuditHead string `json:"audit_head,omitempty"`
	AuditSent uint64 `json:"audit_sent,omitempty"`
	// Junk summarises unverified messages (malformed, unsigned, unknown
	// key, bad signature, oversize): counted here, never entered one by
	// one, so that a flood cannot push real entries out of Audit.
	Junk junkSummary `json:"junk"`
}

// junkSummary counts refused unverified messages by reason.
type junkSummary struct {
	Count     uint64            `json:"count"`
	First     int64             `json:"first,omitempty"` // ms
	Last      int64             `json:"last,omitempty"`  // ms
	Reasons   map[string]uint64 `json:"reasons,omitempty"`
	Published uint64            `json:"published,omitempty"` // Count when last published
	Oversize  uint64            `json:"-"`                   // the messenger's count last seen
}

const maxHistory = 64

// appliedConfig is a remote config as applied: the body is kept, not the
// resulting config, so that a changed local file still lies underneath.
type appliedConfig struct {
	Version   uint64 `json:"version"`
	Scope     string `json:"scope"`
	KeyID     string `json:"kid,omitempty"`
	Body      string `json:"body"`
	Digest    string `json:"digest"`
	AppliedAt int64  `json:"applied_at"`
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16])
}

// Origin is where a key's effective value came from.
type Origin struct {
	Scope   string `json:"scope"` // "local", "all", "group/NAME", "device/ID"
	Version uint64 `json:"version,omitempty"`
}

// ErrLocked marks a lower-scope config that would weaken a privacy setting
// locked at fleet scope.
var ErrLocked = errors.New("privacy is locked at fleet scope and this would weaken it")

// compose lays the remote layers over the local config in order: fleet,
// then each of the device's groups in device.groups order, then the
// device. The device's groups come from the local, fleet and device
// layers (a group config may not move the device between groups). It
// returns the config, each remotely set key's origin, and an error naming
// the scope and key of the first layer that does not fit. The result is
// not validated: the agent's door does that.
func compose(base config.Config, dev string, fixedGroups []string, layers map[string]*appliedConfig) (config.Config, map[string]Origin, error) {
	overlay := func(c config.Config, a *appliedConfig) (config.Config, []string, error) {
		next, keys, err := config.Overlay(c, []byte(a.Body))
		if err != nil {
			return config.Config{}, keys, fmt.Errorf("%s version %d: %w", a.Scope, a.Version, err)
		}
		return next, keys, nil
	}
	groups := fixedGroups
	if groups == nil {
		c := base
		for _, s := range []string{"all", "device/" + dev} {
			if a := layers[s]; a != nil {
				var err error
				if c, _, err = overlay(c, a); err != nil {
					return config.Config{}, nil, err
				}
			}
		}
		groups = c.Device.Group
	}
	order := []string{"all"}
	for _, g := range groups {
		order = append(order, "group/"+g)
	}
	order = append(order, "device/"+dev)

	c := config.Clone(base)
	origins := map[string]Origin{}
	var locked *config.Privacy
	var version uint64
	for _, s := range order {
		a := layers[s]
		if a == nil {
			if s == "all" && base.Privacy.Locked {
				p := base.Privacy
				locked = &p
			}
			continue
		}
		next, keys, err := overlay(c, a)
		if err != nil {
			return config.Config{}, nil, err
		}
		if strings.HasPrefix(s, "group/") && slices.Contains(keys, "device.groups") {
			return config.Config{}, nil, fmt.Errorf("%s version %d: %w", a.Scope, a.Version,
				&config.FieldError{Path: "device.groups", Err: errors.New("cannot be set at group scope")})
		}
		if locked != nil {
			if err := checkPrivacyLock(*locked, next.Privacy); err != nil {
				return config.Config{}, nil, fmt.Errorf("%s version %d: %w", a.Scope, a.Version, err)
			}
		}
		if s == "all" && next.Privacy.Locked {
			p := next.Privacy
			locked = &p
		}
		for _, k := range keys {
			origins[k] = Origin{Scope: s, Version: a.Version}
		}
		version = max(version, a.Version)
		c = next
	}
	c.Version = version
	return c, origins, nil
}

// privacyStrength orders privacy modes from weakest to strongest.
var privacyStrength = map[string]int{"off": 0, "coarse": 1, "pause": 2}

// checkPrivacyLock refuses a lower scope's privacy that is weaker than the
// locked fleet-scope privacy.
func checkPrivacyLock(locked, next config.Privacy) error {
	var errs []error
	if !next.Locked {
		errs = append(errs, &config.FieldError{Path: "privacy.locked", Err: ErrLocked})
	}
	if privacyStrength[next.Mode] < privacyStrength[locked.Mode] {
		errs = append(errs, &config.FieldError{Path: "privacy.mode", Err: fmt.Errorf("%w: %q is weaker than %q", ErrLocked, next.Mode, locked.Mode)})
	}
	if privacyStrength[next.OnMode] < privacyStrength[locked.OnMode] {
		errs = append(errs, &config.FieldError{Path: "privacy.on_mode", Err: fmt.Errorf("%w: %q is weaker than %q", ErrLocked, next.OnMode, locked.OnMode)})
	}
	if next.Grid < locked.Grid {
		errs = append(errs, &config.FieldError{Path: "privacy.grid", Err: fmt.Errorf("%w: %g m is finer than %g m", ErrLocked, next.Grid, locked.Grid)})
	}
	// The off-duty triggers and zones: a lower scope may add, never remove.
	for _, w := range config.WeakerTriggers(locked, next) {
		errs = append(errs, &config.FieldError{Path: w.Path, Err: fmt.Errorf("%w: %s", ErrLocked, w.Why)})
	}
	return errors.Join(errs...)
}

func cloneLayers(l map[string]*appliedConfig) map[string]*appliedConfig {
	out := make(map[string]*appliedConfig, len(l))
	for k, v := range l {
		c := *v
		out[k] = &c
	}
	return out
}

func sameLayers(a, b map[string]*appliedConfig) bool {
	return maps.EqualFunc(a, b, func(x, y *appliedConfig) bool { return x.Digest == y.Digest })
}

func loadState(path string) (*state, error) {
	st := &state{Format: stateFormat}
	if path == "" {
		return st, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read remote state: %w", err)
	}
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(data, &head); err == nil && head.Format == 1 {
		return migrateState1(path, data)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("remote state %s: %w", path, err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("remote state %s: format %d, want %d", path, st.Format, stateFormat)
	}
	return st, nil
}

// legacyScopes is the anchor's high-water key that holds format 1's single
// high-water mark: it floors every scope, since format 1 counted versions
// across all scopes in one.
const legacyScopes = "*"

// migrateState1 reads the state that agents before layered scopes wrote
// (format 1: one overlay, one high-water for every scope). Its high-water
// becomes a floor under every scope, so an upgrade reopens no replay; its
// confirmed overlay becomes that scope's layer, its audit and command
// history carry over, and an unconfirmed overlay is dropped (the device
// runs its last good config, as a rollback would leave it).
func migrateState1(path string, data []byte) (*state, error) {
	var old struct {
		HighWater    uint64             `json:"high_water"`
		Good         *appliedConfig     `json:"good"`
		History      []string           `json:"history"`
		RolledBack   []string           `json:"rolled_back"`
		Commands     map[string]int64   `json:"commands"`
		Privacy      string             `json:"privacy"`
		UnsentReport []byte             `json:"unsent_report"`
		AuditSeq     uint64             `json:"audit_seq"`
		Audit        []fleet.AuditEntry `json:"audit"`
	}
	if err := json.Unmarshal(data, &old); err != nil {
		return nil, fmt.Errorf("remote state %s (format 1): %w", path, err)
	}
	st := &state{
		Format: stateFormat, History: old.History, RolledBack: old.RolledBack, Commands: old.Commands,
		Privacy: old.Privacy, UnsentReport: old.UnsentReport, AuditSeq: old.AuditSeq, Audit: old.Audit,
		HighWater: map[string]uint64{legacyScopes: old.HighWater},
	}
	if g := old.Good; g != nil && g.Scope != "" {
		st.Layers = map[string]*appliedConfig{g.Scope: g}
		st.GoodLayers = map[string]*appliedConfig{g.Scope: g}
	}
	return st, nil
}

func (st *state) save(path string) error {
	if path == "" {
		return nil
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("remote state: %w", err)
	}
	return config.WriteAtomic(path, data, 0o600)
}
