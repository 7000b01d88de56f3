package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kestrel-edge/kestrel/agent/config"
)

const stateFormat = 1

// state is what the device keeps across restarts (remote.state_file),
// written with config.WriteAtomic.
type state struct {
	Format    int    `json:"format"`
	HighWater uint64 `json:"high_water"` // highest version applied or rolled back
	// Good is the last remote config confirmed by reaching a broker after
	// applying it; Pending one applied but not yet confirmed. Nil: none.
	Good         *appliedConfig `json:"good,omitempty"`
	Pending      *appliedConfig `json:"pending,omitempty"`
	PendingBoots int            `json:"pending_boots,omitempty"`
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
	UnsentReport []byte       `json:"unsent_report,omitempty"`
	AuditSeq     uint64       `json:"audit_seq"`
	Audit        []AuditEntry `json:"audit,omitempty"`
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

// effective lays an applied remote config over the local one.
func effective(base config.Config, a *appliedConfig) (config.Config, error) {
	if a == nil {
		return base, nil
	}
	c, _, err := config.Overlay(base, []byte(a.Body))
	if err != nil {
		return config.Config{}, err
	}
	c.Version = a.Version
	return c, nil
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
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("remote state %s: %w", path, err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("remote state %s: format %d, want %d", path, st.Format, stateFormat)
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
