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

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// MaxVersionStep bounds how far one config may move a scope's version
// forward: a version above the scope's high-water plus this step is
// refused. Versions are Unix seconds by default (kestrelctl config push),
// which stay below the step from zero until the year 2106, so a first
// push is accepted. A single signed version of 2^64−1 can therefore never
// be applied, and however high a trusted key pushes the high-water, a
// higher version always remains (2^32 steps of 2^32).
const MaxVersionStep = 1 << 32

// ErrVersionJump marks a config whose version jumps too far ahead.
var ErrVersionJump = errors.New("version jumps too far ahead")

// checkVersion refuses a version that is not above the high-water, or
// that is more than MaxVersionStep above it.
func checkVersion(scope string, version, highWater uint64) error {
	if version <= highWater {
		return fmt.Errorf("%w: version %d, highest seen at %s scope %d", fleet.ErrStale, version, scope, highWater)
	}
	if version-highWater > MaxVersionStep {
		return fmt.Errorf("%w: version %d, highest seen at %s scope %d, step limit %d", ErrVersionJump, version, scope, highWater, uint64(MaxVersionStep))
	}
	return nil
}

// anchor is the anti-rollback state: per scope the version high-water
// (and the digest of the config at it), the keys trusted so far and the
// keys revoked by a verified config. It is kept three times: inside the
// state file, and in two anchor files (STATE.anchor.a, STATE.anchor.b),
// each with a SHA-256 checksum and a generation counter, written one
// after the other. Loading merges every copy that checks out (highest
// version per scope, union of revoked keys), so that losing or corrupting
// any one file neither lowers a high-water nor forgets a revocation.
type anchor struct {
	Gen       uint64            `json:"gen"`
	HighWater map[string]uint64 `json:"high_water,omitempty"`
	// Digest is, per scope, the envelope digest at the high-water while
	// that config is in force (cleared when it is rolled back): after the
	// state file is lost, the retained copy of the config in force is
	// accepted again, and nothing older.
	Digest map[string]string `json:"digest,omitempty"`
	// Trusted are the public keys (remote.trusted_keys form) trusted so
	// far; a key leaves only by revocation.
	Trusted []string `json:"trusted,omitempty"`
	// Revoked are key ids dropped from remote.trusted_keys by a verified
	// config or by the local file; a revoked key is trusted again only
	// when a verified config lists it in remote.trusted_keys.
	Revoked []string `json:"revoked,omitempty"`
	// Local are the key ids the local file trusted when last seen: a key
	// gone from it since is revoked; a key new in it is trusted again.
	Local []string `json:"local,omitempty"`
}

type anchorFile struct {
	Anchor anchor `json:"anchor"`
	Sum    string `json:"sum"` // hex SHA-256 of the anchor's JSON
}

func newAnchor() anchor {
	return anchor{HighWater: map[string]uint64{}, Digest: map[string]string{}}
}

func (a *anchor) fill() {
	if a.HighWater == nil {
		a.HighWater = map[string]uint64{}
	}
	if a.Digest == nil {
		a.Digest = map[string]string{}
	}
}

func (a anchor) clone() anchor {
	a.HighWater, a.Digest = maps.Clone(a.HighWater), maps.Clone(a.Digest)
	a.Trusted, a.Revoked, a.Local = slices.Clone(a.Trusted), slices.Clone(a.Revoked), slices.Clone(a.Local)
	a.fill()
	return a
}

// merge folds another copy in: the higher high-water per scope (with its
// digest), the union of trusted and of revoked keys, the higher generation.
func (a *anchor) merge(b anchor) {
	a.fill()
	a.Gen = max(a.Gen, b.Gen)
	for s, v := range b.HighWater {
		switch {
		case v > a.HighWater[s]:
			a.HighWater[s] = v
			if d := b.Digest[s]; d != "" {
				a.Digest[s] = d
			} else {
				delete(a.Digest, s)
			}
		case v == a.HighWater[s] && a.Digest[s] != b.Digest[s]:
			// Copies disagree about the config at the high-water (one
			// saw it rolled back): trust neither.
			delete(a.Digest, s)
		}
	}
	a.Trusted = union(a.Trusted, b.Trusted)
	a.Revoked = union(a.Revoked, b.Revoked)
	a.Local = union(a.Local, b.Local)
}

// union returns the sorted union of two sets.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, k := range b {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// revoke marks key ids revoked and drops them from Trusted.
func (a *anchor) revoke(kids ...string) {
	for _, kid := range kids {
		if !slices.Contains(a.Revoked, kid) {
			a.Revoked = append(a.Revoked, kid)
		}
	}
	slices.Sort(a.Revoked)
	a.Trusted = slices.DeleteFunc(a.Trusted, func(k string) bool {
		pub, _, err := config.ParseTrustedKey(k)
		return err != nil || slices.Contains(a.Revoked, fleet.KeyID(pub))
	})
}

// unrevoke trusts key ids again.
func (a *anchor) unrevoke(kids ...string) {
	a.Revoked = slices.DeleteFunc(a.Revoked, func(k string) bool { return slices.Contains(kids, k) })
}

// keyIDs returns the ids of the parseable keys in a remote.trusted_keys
// list (Validate has refused the others).
func keyIDs(keys []string) []string {
	var out []string
	for _, k := range keys {
		if pub, _, err := config.ParseTrustedKey(k); err == nil {
			out = append(out, fleet.KeyID(pub))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// dropped returns the ids in old that are not in next.
func dropped(old, next []string) []string {
	var out []string
	for _, k := range old {
		if !slices.Contains(next, k) {
			out = append(out, k)
		}
	}
	return out
}

func anchorPaths(statePath string) [2]string {
	return [2]string{statePath + ".anchor.a", statePath + ".anchor.b"}
}

// loadAnchors reads both anchor files. A missing or corrupt file is
// reported in problems, not as an error: the other copies stand in.
func loadAnchors(statePath string) (anchor, []string) {
	out := newAnchor()
	var problems []string
	for _, p := range anchorPaths(statePath) {
		a, err := readAnchor(p)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		out.merge(a)
	}
	return out, problems
}

func readAnchor(path string) (anchor, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return anchor{}, fmt.Errorf("anchor %s: missing", filepath.Base(path))
	}
	if err != nil {
		return anchor{}, fmt.Errorf("anchor: %w", err)
	}
	if len(data) > 1<<20 {
		return anchor{}, fmt.Errorf("anchor %s: %d bytes", filepath.Base(path), len(data))
	}
	var f struct {
		Anchor json.RawMessage `json:"anchor"`
		Sum    string          `json:"sum"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return anchor{}, fmt.Errorf("anchor %s: %w", filepath.Base(path), err)
	}
	h := sha256.Sum256(f.Anchor)
	if hex.EncodeToString(h[:]) != f.Sum {
		return anchor{}, fmt.Errorf("anchor %s: checksum mismatch", filepath.Base(path))
	}
	var a anchor
	if err := json.Unmarshal(f.Anchor, &a); err != nil {
		return anchor{}, fmt.Errorf("anchor %s: %w", filepath.Base(path), err)
	}
	a.fill()
	return a, nil
}

// saveAnchors writes a to both anchor files, one after the other, each
// atomically: a crash between the two leaves one new and one old copy,
// and loading merges them.
func saveAnchors(statePath string, a anchor) error {
	if statePath == "" {
		return nil
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	h := sha256.Sum256(body)
	data, err := json.Marshal(struct {
		Anchor json.RawMessage `json:"anchor"`
		Sum    string          `json:"sum"`
	}{body, hex.EncodeToString(h[:])})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(statePath), 0o700); err != nil {
		return fmt.Errorf("anchor: %w", err)
	}
	var errs []error
	for _, p := range anchorPaths(statePath) {
		if err := config.WriteAtomic(p, data, 0o600); err != nil {
			errs = append(errs, fmt.Errorf("anchor: %w", err))
		}
	}
	return errors.Join(errs...)
}
