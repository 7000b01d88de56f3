package update

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// File names under the state directory.
const (
	StateFile   = "update.json"
	CurrentLink = "current"
	SlotsDir    = "slots"
	BinaryName  = "kestrel"
	partName    = "kestrel.part"
	// ManifestName is the signed release kept beside a slot's binary.
	ManifestName = "release.json"
)

// flushBytes: chunks written since the last sync are synced (and the
// state file records them) once this many bytes are waiting. A power cut
// costs at most this much to fetch again.
const flushBytes = 64 << 10

// Errors.
var (
	ErrBusy     = errors.New("an update is already pending verify")
	ErrNoStage  = errors.New("no download in progress")
	ErrMismatch = errors.New("binary does not match its manifest")
)

// Dir is the update state directory for cfg: update.dir, or the directory
// of remote.state_file (/var/lib/kestrel by default).
func Dir(cfg config.Config) string {
	if cfg.Update.Dir != "" {
		return cfg.Update.Dir
	}
	return filepath.Dir(cfg.Remote.StateFile)
}

// Options configures an Updater.
type Options struct {
	// Dir holds update.json, slots/ and the current link.
	Dir string
	// Executable is the running binary (default os.Executable); it says
	// which slot, if any, this process runs from.
	Executable string
	// Version is the running binary's version string (main.version).
	Version string
	Logger  *slog.Logger
	Now     func() time.Time
	// Patch applies a delta (transport/delta.Patch); nil: deltas are
	// not used and whole binaries are fetched.
	Patch func(old, patch []byte, maxSize int64) ([]byte, error)
}

// Updater is the device's A/B updater. Its methods are safe for
// concurrent use.
type Updater struct {
	dir     string
	log     *slog.Logger
	now     func() time.Time
	self    string // the slot this process runs from ("": the package's binary)
	exe     string // the running binary's path
	version string
	patch   func(old, patch []byte, maxSize int64) ([]byte, error)
	selfSHA string // the running binary's hash, once computed
	// noDelta: releases whose delta failed to apply here: fetched whole.
	noDelta map[string]bool

	mu       sync.Mutex
	st       *State
	part     *os.File
	unsynced int
	gate     bool // this process is a pending release's first start
}

// Open loads the state (or starts it afresh) and works out which slot
// this process runs from. It changes nothing on disk but the slot
// directories it creates.
func Open(opts Options) (*Updater, error) {
	u := &Updater{dir: opts.Dir, log: opts.Logger, now: opts.Now, version: opts.Version, patch: opts.Patch, noDelta: map[string]bool{}}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.log = u.log.With("part", "update")
	if u.now == nil {
		u.now = time.Now
	}
	if u.dir == "" {
		return nil, errors.New("update: no state directory")
	}
	for _, s := range []string{"a", "b"} {
		if err := os.MkdirAll(u.slotDir(s), 0o750); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	exe := opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	u.self, u.exe = u.slotOf(exe), exe
	st, err := loadState(u.statePath())
	switch {
	case errors.Is(err, os.ErrNotExist):
		st = u.fresh()
	case err != nil:
		aside := fmt.Sprintf("%s.corrupt-%d", u.statePath(), u.now().Unix())
		u.log.Error("update state unreadable: starting afresh from the slot in use", "err", err, "moved_to", aside)
		_ = os.Rename(u.statePath(), aside)
		st = u.fresh()
	}
	u.st = st
	return u, nil
}

// fresh is the state of a device with no (readable) update state: the
// binary running, with the release number its slot's manifest gives.
func (u *Updater) fresh() *State {
	st := &State{Format: stateFormat, Running: Installed{Version: u.version, Slot: u.self}}
	if u.self != "" {
		if r, err := readManifest(filepath.Join(u.slotDir(u.self), ManifestName)); err == nil {
			st.Running.Seq, st.Running.Version, st.Running.SHA256 = r.Seq, r.Version, r.SHA256
		}
	}
	return st
}

func readManifest(path string) (*fleet.Release, error) {
	b, err := readBounded(path, fleet.MaxRelease)
	if err != nil {
		return nil, err
	}
	return fleet.DecodeRelease(b)
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}

func (u *Updater) statePath() string          { return filepath.Join(u.dir, StateFile) }
func (u *Updater) slotDir(s string) string    { return filepath.Join(u.dir, SlotsDir, s) }
func (u *Updater) binary(s string) string     { return filepath.Join(u.slotDir(s), BinaryName) }
func (u *Updater) partPath(s string) string   { return filepath.Join(u.slotDir(s), partName) }
func (u *Updater) linkTarget(s string) string { return filepath.Join(SlotsDir, s, BinaryName) }

// slotOf says which slot the binary at exe is ("" for none).
func (u *Updater) slotOf(exe string) string {
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		real = exe
	}
	for _, s := range []string{"a", "b"} {
		p, err := filepath.EvalSymlinks(u.binary(s))
		if err != nil {
			p = u.binary(s)
		}
		if real == p {
			return s
		}
	}
	return ""
}

// Self is the slot this process runs from ("": the package's binary).
func (u *Updater) Self() string { return u.self }

// State returns a copy of the state.
func (u *Updater) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := *u.st
	if u.st.Staging != nil {
		s := *u.st.Staging
		s.Have = append([]byte(nil), s.Have...)
		c.Staging = &s
	}
	if u.st.Pending != nil {
		p := *u.st.Pending
		c.Pending = &p
	}
	if u.st.Last != nil {
		l := *u.st.Last
		c.Last = &l
	}
	c.Reverted = append([]string(nil), u.st.Reverted...)
	return c
}

// Running is the release in force: the anti-rollback counter.
func (u *Updater) Running() Installed {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.Running
}

// WasReverted says whether the release with this SHA-256 failed its
// health gate on this device.
func (u *Updater) WasReverted(sha string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.st.Reverted {
		if s == sha {
			return true
		}
	}
	return false
}

// PendingVerify says whether this process is a pending release's first
// start: its health gate decides (MarkGood or Revert).
func (u *Updater) PendingVerify() (Installed, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.gate || u.st.Pending == nil {
		return Installed{}, false
	}
	return u.st.Pending.Installed, true
}

func (u *Updater) saveLocked(step string) error {
	if err := u.st.save(u.statePath()); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	crashPoint(step)
	return nil
}

// linkSlot is the slot the current link names ("": none, or not a slot).
func (u *Updater) linkSlot() string {
	t, err := os.Readlink(filepath.Join(u.dir, CurrentLink))
	if err != nil {
		return ""
	}
	for _, s := range []string{"a", "b"} {
		if t == u.linkTarget(s) || t == u.binary(s) {
			return s
		}
	}
	return ""
}

// switchLink points current at slot s (or removes it for ""): a new link
// renamed over the old one, then the directory synced.
func (u *Updater) switchLink(s string) error {
	link := filepath.Join(u.dir, CurrentLink)
	if s == "" {
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("update: %w", err)
		}
	} else {
		tmp := link + ".new"
		_ = os.Remove(tmp)
		if err := os.Symlink(u.linkTarget(s), tmp); err != nil {
			return fmt.Errorf("update: %w", err)
		}
		if err := os.Rename(tmp, link); err != nil {
			return fmt.Errorf("update: %w", err)
		}
	}
	if err := syncDir(u.dir); err != nil {
		return err
	}
	crashPoint("link")
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("update: fsync %s: %w", dir, err)
	}
	return nil
}

// CurrentBinary is the binary the current link names, or "" when there is
// none (run the package's binary).
func (u *Updater) CurrentBinary() string {
	s := u.linkSlot()
	if s == "" {
		return ""
	}
	return u.binary(s)
}

// Binary is the path of slot s's binary.
func (u *Updater) Binary(s string) string { return u.binary(s) }

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Release is what the updater needs of a verified manifest.
type Release struct {
	Seq       uint64
	Version   string
	SHA256    string
	Size      int64 // of the download: the binary, or the delta
	ChunkSize int
	// Manifest is the signed JSON, kept beside the binary.
	Manifest []byte
	// BlobSHA256, BaseSHA256 and TargetSize: for a delta download (see
	// Staging).
	BlobSHA256, BaseSHA256 string
	TargetSize             int64
}

// FromManifest takes the fields of a verified manifest.
func FromManifest(r *fleet.Release, raw []byte) Release {
	return Release{Seq: r.Seq, Version: r.Version, SHA256: r.SHA256, Size: r.Size, ChunkSize: r.ChunkSize, Manifest: raw}
}

// inactive is the slot that a new release goes into.
func (u *Updater) inactive() string {
	if u.st.Running.Slot == "a" {
		return "b"
	}
	return "a"
}

// Staging returns the download in progress, if any.
func (u *Updater) Staging() (Staging, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Staging == nil {
		return Staging{}, false
	}
	s := *u.st.Staging
	s.Have = append([]byte(nil), s.Have...)
	return s, true
}

// Begin starts (or resumes, for the same binary) a download of r into the
// inactive slot. Another download in progress is dropped.
func (u *Updater) Begin(r Release) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Pending != nil {
		return ErrBusy
	}
	if r.Size <= 0 || r.Size > fleet.MaxReleaseSize || r.ChunkSize < fleet.MinChunkSize || r.ChunkSize > fleet.MaxChunkSize {
		return fmt.Errorf("update: size %d, chunk size %d out of bounds", r.Size, r.ChunkSize)
	}
	if s := u.st.Staging; s != nil && s.SHA256 == r.SHA256 && s.BlobSHA256 == r.BlobSHA256 && s.Size == r.Size && s.ChunkSize == r.ChunkSize && s.Seq == r.Seq {
		if u.part == nil {
			if _, err := os.Stat(u.partPath(s.Slot)); errors.Is(err, os.ErrNotExist) {
				// Stopped between renaming the verified binary into
				// place and recording it pending: it goes back to
				// being the partial file, to be verified again.
				if err := os.Rename(u.binary(s.Slot), u.partPath(s.Slot)); err == nil {
					u.log.Info("verified binary found in its slot: checking it again", "slot", s.Slot)
				}
			}
			f, err := os.OpenFile(u.partPath(s.Slot), os.O_RDWR, 0o600)
			if err == nil {
				u.part = f
				return nil
			}
			u.log.Warn("partial download gone: starting again", "err", err)
		} else {
			return nil
		}
	}
	u.closePart()
	slot := u.inactive()
	dir := u.slotDir(slot)
	for _, n := range []string{partName, BinaryName, ManifestName} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("update: clearing slot %s: %w", slot, err)
		}
	}
	if err := config.WriteAtomic(filepath.Join(dir, ManifestName), r.Manifest, 0o600); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	f, err := os.OpenFile(u.partPath(slot), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Truncate(r.Size); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("update: %w", err)
	}
	u.part = f
	u.unsynced = 0
	u.st.Staging = &Staging{
		Installed: Installed{Seq: r.Seq, Version: r.Version, SHA256: r.SHA256, Slot: slot},
		Size:      r.Size, ChunkSize: r.ChunkSize,
		BlobSHA256: r.BlobSHA256, BaseSHA256: r.BaseSHA256, TargetSize: r.TargetSize,
		Have:     make([]byte, (chunks(r.Size, r.ChunkSize)+7)/8),
		Manifest: json.RawMessage(r.Manifest),
	}
	return u.saveLocked("begin")
}

func (u *Updater) closePart() {
	if u.part != nil {
		u.part.Close()
		u.part = nil
	}
}

// Next is the first chunk not yet held (ok false: all held).
func (u *Updater) Next() (int, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st.Staging
	if s == nil {
		return 0, false
	}
	n := chunks(s.Size, s.ChunkSize)
	for i := 0; i < n; i++ {
		if s.Have[i/8]&(1<<(i%8)) == 0 {
			return i, true
		}
	}
	return 0, false
}

// Progress is how many bytes of how many are held.
func (u *Updater) Progress() (have, size int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st.Staging
	if s == nil {
		return 0, 0
	}
	n := chunks(s.Size, s.ChunkSize)
	for i := 0; i < n; i++ {
		if s.Have[i/8]&(1<<(i%8)) != 0 {
			have += chunkLen(s.Size, s.ChunkSize, i)
		}
	}
	return have, s.Size
}

func chunkLen(size int64, chunkSize, i int) int64 {
	off := int64(i) * int64(chunkSize)
	return min(int64(chunkSize), size-off)
}

// Write stores chunk i of the download. A chunk of the wrong length, or
// out of range, is refused.
func (u *Updater) Write(i int, data []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st.Staging
	if s == nil || u.part == nil {
		return ErrNoStage
	}
	n := chunks(s.Size, s.ChunkSize)
	if i < 0 || i >= n {
		return fmt.Errorf("update: chunk %d of %d", i, n)
	}
	if want := chunkLen(s.Size, s.ChunkSize, i); int64(len(data)) != want {
		return fmt.Errorf("update: chunk %d is %d bytes, want %d", i, len(data), want)
	}
	if s.Have[i/8]&(1<<(i%8)) != 0 {
		return nil
	}
	if _, err := u.part.WriteAt(data, int64(i)*int64(s.ChunkSize)); err != nil {
		return fmt.Errorf("update: chunk %d: %w", i, err)
	}
	crashPoint("chunk")
	s.Have[i/8] |= 1 << (i % 8)
	u.unsynced += len(data)
	if u.unsynced >= flushBytes {
		return u.flushLocked()
	}
	return nil
}

// Flush syncs the chunks written and records them in the state file.
func (u *Updater) Flush() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.unsynced == 0 {
		return nil
	}
	return u.flushLocked()
}

func (u *Updater) flushLocked() error {
	if u.part == nil {
		return ErrNoStage
	}
	// The data first: the state never names a chunk that is not on disk.
	if err := u.part.Sync(); err != nil {
		return fmt.Errorf("update: fsync: %w", err)
	}
	if err := u.saveLocked("progress"); err != nil {
		return err
	}
	u.unsynced = 0
	return nil
}

// Abort drops the download in progress and records why.
func (u *Updater) Abort(state, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st.Staging
	if s == nil {
		return nil
	}
	u.closePart()
	_ = os.Remove(u.partPath(s.Slot))
	u.st.Staging = nil
	u.st.Last = &Result{Seq: s.Seq, Version: s.Version, State: state, Reason: reason, Time: u.now().UnixMilli()}
	return u.saveLocked("abort")
}

// Finish checks the whole download against its manifest (size and
// SHA-256), makes it executable, records it pending verify and switches
// the current link to it. The caller then exits for the service manager
// to start the new binary. A mismatch drops the download (ErrMismatch).
func (u *Updater) Finish() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.st.Staging
	if s == nil || u.part == nil {
		return ErrNoStage
	}
	if err := u.flushLocked(); err != nil && !errors.Is(err, ErrNoStage) {
		return err
	}
	u.closePart()
	part := u.partPath(s.Slot)
	sum, n, err := hashFile(part)
	if err != nil {
		return fmt.Errorf("update: verifying: %w", err)
	}
	patched := s.BlobSHA256 != "" && sum == s.SHA256 && n == s.TargetSize // stopped after patching
	if !patched && (sum != s.blobSHA256() || n != s.Size) {
		_ = os.Remove(part)
		u.st.Staging = nil
		reason := fmt.Sprintf("%v: %d bytes with sha256 %s, manifest says %d bytes with %s", ErrMismatch, n, sum, s.Size, s.blobSHA256())
		u.st.Last = &Result{Seq: s.Seq, Version: s.Version, State: fleet.UpdateFailed, Reason: reason, Time: u.now().UnixMilli()}
		if err := u.saveLocked("mismatch"); err != nil {
			return err
		}
		return errors.New(reason)
	}
	if s.BlobSHA256 != "" && !patched {
		if err := u.applyDelta(s, part); err != nil {
			// Fetch the whole binary instead, at once.
			u.noDelta[s.SHA256] = true
			_ = os.Remove(part)
			u.st.Staging = nil
			if serr := u.saveLocked("delta-failed"); serr != nil {
				return serr
			}
			return fmt.Errorf("%w: %v", fleet.ErrDeltaFailed, err)
		}
	}
	if err := os.Chmod(part, 0o750); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := os.Rename(part, u.binary(s.Slot)); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	if err := syncDir(u.slotDir(s.Slot)); err != nil {
		return err
	}
	crashPoint("verified")
	u.st.Pending = &Pending{Installed: s.Installed, From: u.st.Running, Since: u.now().UnixMilli()}
	u.st.Staging = nil
	if err := u.saveLocked("pending"); err != nil {
		return err
	}
	return u.switchLink(s.Slot)
}

// MarkGood confirms the pending release: it becomes the running one (and
// the anti-rollback counter).
func (u *Updater) MarkGood() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.st.Pending
	if p == nil {
		return nil
	}
	u.st.Running = p.Installed
	u.st.Pending = nil
	u.gate = false
	u.st.Last = &Result{Seq: p.Seq, Version: p.Version, State: fleet.UpdateGood, Time: u.now().UnixMilli()}
	return u.saveLocked("good")
}

// Revert switches back to the slot the pending release came from and
// records why. It returns true when this process is not that slot's
// binary and must exit for the service manager to start it.
func (u *Updater) Revert(reason string) (restart bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.revertLocked(reason)
}

func (u *Updater) revertLocked(reason string) (bool, error) {
	p := u.st.Pending
	if p == nil {
		return false, nil
	}
	u.gate = false
	if p.Reverting == "" {
		p.Reverting = reason
		if err := u.saveLocked("reverting"); err != nil {
			return false, err
		}
	}
	if err := u.switchLink(p.From.Slot); err != nil {
		return false, err
	}
	u.st.Pending = nil
	u.st.Running = p.From
	u.st.Last = &Result{Seq: p.Seq, Version: p.Version, State: fleet.UpdateReverted, Reason: p.Reverting, Time: u.now().UnixMilli()}
	u.st.Reverted = append(u.st.Reverted, p.SHA256)
	if len(u.st.Reverted) > maxReverted {
		u.st.Reverted = u.st.Reverted[len(u.st.Reverted)-maxReverted:]
	}
	if err := u.saveLocked("reverted"); err != nil {
		return false, err
	}
	u.log.Error("update reverted", "seq", p.Seq, "version", p.Version, "reason", p.Reverting, "to_slot", p.From.Slot)
	return u.self != p.From.Slot, nil
}

// MarkReported records that the last result was published.
func (u *Updater) MarkReported() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Last == nil || u.st.Last.Reported {
		return nil
	}
	u.st.Last.Reported = true
	return u.saveLocked("reported")
}

// Reject records a release refused before download (signature, expiry,
// downgrade, platform, spool format) as the last result.
func (u *Updater) Reject(seq uint64, version, reason string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.Last = &Result{Seq: seq, Version: version, State: fleet.UpdateRejected, Reason: reason, Time: u.now().UnixMilli()}
	return u.saveLocked("rejected")
}

// Close releases the partial file. Safe to call twice.
func (u *Updater) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.part != nil && u.unsynced > 0 {
		_ = u.flushLocked()
	}
	u.closePart()
	return nil
}

// slotLabel names a slot for messages.
func slotLabel(s string) string {
	if s == "" {
		return "the package's binary"
	}
	return "slot " + strings.ToUpper(s)
}
