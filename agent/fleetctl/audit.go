package fleetctl

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// The device's audit log (docs/audit.md): every entry is chained to the
// one before it (fleet.AuditEntry.Chain), the head and seq persist in the
// state file, and the entries the broker has not acknowledged are sent
// from the state file, in seq order, sealed with the device key. The
// state keeps the tail (remote.audit_max entries); an entry trimmed from
// it before it was sent never reaches the platform, which names the gap.

// audit chains an entry after the head, keeps it (bounded) and wakes the
// publisher. Callers hold m.mu (or own m exclusively).
func (m *Manager) audit(e fleet.AuditEntry) {
	m.st.AuditSeq++
	e.Seq = m.st.AuditSeq
	if e.Time == 0 {
		e.Time = m.now().UnixMilli()
	}
	if len(e.By) == 0 {
		e.By = []string{fleet.ByDevice}
	}
	if _, err := e.Chain(m.fleet, m.dev, m.st.AuditHead); err != nil {
		// Marshalling a struct of strings and numbers does not fail; if
		// it ever did, the seq is spent and the platform names the gap.
		m.log.Error("audit entry not chained", "seq", e.Seq, "err", err)
		return
	}
	m.st.AuditHead = e.Digest
	e.Body, e.Signature = nil, nil
	m.st.Audit = append(m.st.Audit, e)
	if n := m.auditMax(); len(m.st.Audit) > n {
		m.st.Audit = slices.Delete(m.st.Audit, 0, len(m.st.Audit)-n)
	}
	m.dirty = true
	m.wakePublisher()
}

func (m *Manager) auditMax() int {
	n := m.opts.AuditMax
	if n <= 0 {
		n = m.base.Remote.AuditMax
	}
	if n <= 0 {
		n = 256
	}
	return n
}

// nextAudit is the first chained entry the broker has not acknowledged,
// ready to publish. The state file is written first if it does not yet
// hold the entry, so that no published entry's seq or digest can be
// forgotten by a power cut (and reused): one write covers a burst.
func (m *Manager) nextAudit() (outItem, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, _ := slices.BinarySearchFunc(m.st.Audit, m.st.AuditSent+1, func(e fleet.AuditEntry, seq uint64) int { return cmp.Compare(e.Seq, seq) })
	for ; i < len(m.st.Audit) && !m.st.Audit[i].Chained(); i++ {
		// entries from before the chain were published when they were made
	}
	if i == len(m.st.Audit) {
		return outItem{}, false
	}
	e := m.st.Audit[i]
	if e.Seq > m.savedAuditSeq {
		if err := m.saveLocked(); err != nil {
			return outItem{}, false // retried on the next wake-up
		}
	}
	b, err := json.Marshal(&e)
	if err != nil {
		return outItem{}, false
	}
	return outItem{channel: fleet.ChannelAudit, payload: b, auditSeq: e.Seq}, true
}

// auditPublished records the broker's acknowledgement of entry seq. It
// costs no flash write of its own: it is saved with the next one, and an
// entry sent again after a restart is a duplicate the platform ignores.
func (m *Manager) auditPublished(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.AuditSent = max(m.st.AuditSent, seq)
}

// AuditHead is the chain head: the last entry's seq and digest.
func (m *Manager) AuditHead() (uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.AuditSeq, m.st.AuditHead
}

// auditBy names who signed: the verified key ids, else unsigned.
func auditBy(signers []string) []string {
	if len(signers) > 0 {
		return slices.Clone(signers)
	}
	return []string{fleet.ByUnsigned}
}

// auditDiff is what changes did, key by key: the values in from and to,
// secrets redacted.
func auditDiff(from, to config.Config, changes []config.Change) []fleet.AuditDiff {
	if len(changes) == 0 {
		return nil
	}
	out := make([]fleet.AuditDiff, 0, len(changes))
	for _, c := range changes {
		o, _ := config.Get(from, c.Path)
		n, _ := config.Get(to, c.Path)
		out = append(out, fleet.AuditDiff{Path: c.Path, Old: fleet.Redact(c.Path, o), New: fleet.Redact(c.Path, n)})
	}
	return out
}

// auditArgs copies a command's arguments, secrets redacted.
func auditArgs(args map[string]string) map[string]string {
	if len(args) == 0 {
		return nil
	}
	out := maps.Clone(args)
	for k, v := range out {
		out[k] = fleet.Redact(k, v)
	}
	return out
}

// PrivacyChange is a change of the privacy in force (the agent's policy
// reports them: tracking.Change), as the audit records it. It names no
// place.
type PrivacyChange struct {
	Mode  string // in force now: off, coarse, pause, or lifted (an own emergency)
	Was   string // in force before
	Cause string // command, config, schedule, zone, docked, gpio, emergency, ...
}

// AuditPrivacy enters privacy changes in the chain. A change is the
// device's own doing (By "device"): a command or config that caused it
// has its own entry, signed by whoever sent it.
func (m *Manager) AuditPrivacy(changes ...PrivacyChange) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range changes {
		m.audit(fleet.AuditEntry{Kind: "privacy", Name: c.Cause, Result: c.Mode,
			By: []string{fleet.ByDevice}, Diff: []fleet.AuditDiff{{Path: "privacy", Old: c.Was, New: c.Mode}}})
	}
}
