package agent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/identity"
	"github.com/kestrel-edge/kestrel/evidence"
)

// evidenceChain is the agent's part of the hash chain (docs/evidence.md):
// every spooled record is chained as it is stamped, and signed checkpoints
// are stamped into the stream by policy. Guarded by Agent.mu.
type evidenceChain struct {
	chain    *evidence.Chain
	path     string // the persisted head
	last     time.Time
	records  uint64
	interval time.Duration
}

const headFormat = "kestrel-evidence-head/1"

// headFile is where the chain head persists: beside the device key.
func headFile(cfg config.Config) string {
	return filepath.Join(filepath.Dir(identity.KeyFile(cfg)), "evidence-head")
}

// loadHead reads the persisted head; a device without one starts at the
// genesis. A damaged head restarts the chain from the genesis, which the
// verifier reports as a restart.
func loadHead(path string) (evidence.Head, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return evidence.Head{}, nil
	}
	if err != nil {
		return evidence.Head{}, fmt.Errorf("evidence head %s: %w", path, err)
	}
	f := bytes.Fields(b)
	if len(b) > 256 || len(f) != 3 || string(f[0]) != headFormat {
		return evidence.Head{}, fmt.Errorf("evidence head %s: not a %s file", path, headFormat)
	}
	seq, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return evidence.Head{}, fmt.Errorf("evidence head %s: seq: %w", path, err)
	}
	var h evidence.Head
	h.Seq = seq
	if n, err := hex.Decode(h.Digest[:], f[2]); err != nil || n != evidence.DigestSize || len(f[2]) != 2*evidence.DigestSize {
		return evidence.Head{}, fmt.Errorf("evidence head %s: digest is not %d bytes of hex", path, evidence.DigestSize)
	}
	return h, nil
}

func saveHead(path string, h evidence.Head) error {
	return config.WriteAtomic(path, fmt.Appendf(nil, "%s %d %x\n", headFormat, h.Seq, h.Digest[:]), 0o600)
}

// newEvidence continues the chain from the persisted head.
func (a *Agent) newEvidence(cfg config.Config) {
	path := headFile(cfg)
	h, err := loadHead(path)
	if err != nil {
		a.log.Error("evidence chain head lost: the chain restarts from the genesis", "err", err)
	}
	a.ev = evidenceChain{chain: evidence.NewChain(h), path: path}
	a.ev.setConfig(cfg.Evidence)
}

func (e *evidenceChain) setConfig(c config.Evidence) {
	e.records = uint64(max(c.CheckpointRecords, 1))
	e.interval = c.CheckpointInterval.Duration
}

// chainLocked chains a record just spooled.
func (a *Agent) chainLocked(rec *kestrel.Record) {
	if err := a.ev.chain.Add(rec); err != nil {
		a.log.Error("record not chained", "seq", rec.Seq, "err", err)
	}
}

// checkpointDueLocked stamps a checkpoint after rec when policy asks for
// one: at an emergency, every evidence.checkpoint_records records, or at
// the first record once evidence.checkpoint_interval has passed.
func (a *Agent) checkpointDueLocked(rec *kestrel.Record) {
	if _, ok := rec.Body.(*kestrel.Checkpoint); ok {
		return
	}
	if ev, ok := rec.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
		a.checkpointLocked(kestrel.CheckpointEmergency, kestrel.PriorityEmergency)
		return
	}
	switch {
	case a.ev.chain.Since() >= a.ev.records:
		a.checkpointLocked(kestrel.CheckpointRecords, kestrel.PriorityNormal)
	case a.opts.Now().Sub(a.ev.last) >= a.ev.interval:
		a.checkpointLocked(kestrel.CheckpointInterval, kestrel.PriorityNormal)
	}
}

// checkpointLocked stamps, signs, spools and chains a checkpoint, then
// persists the head (the checkpoint's own digest) for the next boot.
func (a *Agent) checkpointLocked(reason kestrel.CheckpointReason, prio kestrel.Priority) {
	now := a.opts.Now()
	r := kestrel.Record{Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: prio}}
	a.stampLocked(&r)
	if err := a.ev.chain.Checkpoint(&r, reason, a.id); err != nil {
		a.log.Error("checkpoint not signed", "err", err)
		return
	}
	if err := a.spoolLocked(&r); err != nil {
		a.log.Warn("checkpoint not spooled", "reason", reason.String(), "seq", r.Seq, "err", err)
		return
	}
	a.chainLocked(&r)
	a.ev.last = now
	if err := saveHead(a.ev.path, a.ev.chain.Head()); err != nil {
		a.log.Error("evidence chain head not persisted", "err", err)
	}
}

// Checkpoint stamps a checkpoint now (the boot and shutdown ones).
func (a *Agent) checkpoint(reason kestrel.CheckpointReason) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checkpointLocked(reason, kestrel.PriorityNormal)
}
