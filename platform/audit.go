package platform

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// The devices' audit chains, stored and checked on insert (docs/audit.md).
// Every audit message is still kept whole in reports, as before; the
// chained ones (seq > 0) also go to audit_entries, one row per distinct
// entry, with what the check found: a prev that is not the stored head, a
// signature that does not verify against the device's key, a seq gap
// (named by its range), a reused seq. A flagged entry is stored, never
// dropped; a redelivery (same seq, same digest) changes nothing.

// querier is a transaction or the database.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// deviceKey is the device's public key (base64) to check its signatures
// against: the device_key of its latest state message, else the one last
// announced before it (kept in audit_heads: a Last Will's state message
// carries none); "" if the device never announced one.
func (s *Store) deviceKey(ctx context.Context, q querier, fleetID, device string) (string, error) {
	// An enrolled device's entries are checked against the key pinned by
	// kestrelctl device enrol (the latest enrolment), never a key it
	// merely announces.
	var enrolled string
	err := q.QueryRowContext(ctx, s.d.q("SELECT device_key FROM enrolments WHERE fleet = ? AND device = ? ORDER BY id DESC LIMIT 1"), fleetID, device).Scan(&enrolled)
	switch {
	case err == nil && enrolled != "":
		return enrolled, nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("enrolled key of %s/%s: %w", fleetID, device, err)
	}
	var state sql.NullString
	err = q.QueryRowContext(ctx, s.d.q("SELECT state FROM devices WHERE fleet = ? AND device = ?"), fleetID, device).Scan(&state)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("device key of %s/%s: %w", fleetID, device, err)
	}
	var st struct {
		Key string `json:"device_key"`
	}
	if state.Valid {
		_ = json.Unmarshal([]byte(state.String), &st) // a state without a key: unsigned devices
	}
	if st.Key != "" {
		return st.Key, nil
	}
	err = q.QueryRowContext(ctx, s.d.q("SELECT device_key FROM audit_heads WHERE fleet = ? AND device = ?"), fleetID, device).Scan(&st.Key)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("device key of %s/%s: %w", fleetID, device, err)
	}
	return st.Key, nil
}

type auditIn struct {
	fleet, device string
	entry         *fleet.AuditEntry
	payload       string
	received      time.Time
}

// writeAudit enters the batch's chained audit entries, device by device
// in seq order, checking each against the stored head.
func (w *batchWriter) writeAudit(ctx context.Context, reports []Report) error {
	var in []auditIn
	for _, r := range reports {
		if r.Channel != ChannelAudit {
			continue
		}
		e, err := fleet.DecodeAudit([]byte(r.Payload))
		if err != nil || e.Seq == 0 || e.Seq > 1<<62 {
			continue // kept in reports as it came; not an entry of the chain
		}
		in = append(in, auditIn{r.Fleet, r.Device, e, r.Payload, r.Received})
	}
	slices.SortStableFunc(in, func(a, b auditIn) int {
		return cmp.Or(strings.Compare(a.fleet, b.fleet), strings.Compare(a.device, b.device), cmp.Compare(a.entry.Seq, b.entry.Seq))
	})
	for start := 0; start < len(in); {
		end := start + 1
		for end < len(in) && in[end].fleet == in[start].fleet && in[end].device == in[start].device {
			end++
		}
		if err := w.writeDeviceAudit(ctx, in[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (w *batchWriter) writeDeviceAudit(ctx context.Context, in []auditIn) error {
	d := w.s.d
	fl, dev := in[0].fleet, in[0].device
	if _, err := w.exec(ctx, "audit_heads", "INSERT INTO audit_heads (fleet, device, seq, digest) VALUES (?, ?, 0, '') ON CONFLICT DO NOTHING", fl, dev); err != nil {
		return err
	}
	var headSeq int64
	var headDigest string
	if err := w.tx.QueryRowContext(ctx, d.q("SELECT seq, digest FROM audit_heads WHERE fleet = ? AND device = ?"+d.forUpdate()), fl, dev).Scan(&headSeq, &headDigest); err != nil {
		return fmt.Errorf("store write: audit head: %w", err)
	}
	key, err := w.s.deviceKey(ctx, w.tx, fl, dev)
	if err != nil {
		return err
	}
	digestAt := func(seq int64) (string, bool, error) {
		var dg string
		err := w.tx.QueryRowContext(ctx, d.q("SELECT digest FROM audit_entries WHERE fleet = ? AND device = ? AND seq = ? ORDER BY received LIMIT 1"), fl, dev, seq).Scan(&dg)
		if errors.Is(err, sql.ErrNoRows) {
			return "", false, nil
		}
		return dg, err == nil, err
	}
	headChained := headSeq == 0 || headDigest != ""
	for _, a := range in {
		e := a.entry
		seq := int64(e.Seq)
		var dup int
		if err := w.tx.QueryRowContext(ctx, d.q("SELECT count(*) FROM audit_entries WHERE fleet = ? AND device = ? AND seq = ? AND digest = ?"), fl, dev, seq, e.Digest).Scan(&dup); err != nil {
			return fmt.Errorf("store write: audit entries: %w", err)
		}
		if dup > 0 {
			continue // a redelivery
		}
		var problems []string
		verdict, verr := fleet.Verdict(e.Signature, key, fl, dev, fleet.ChannelAudit)
		if verdict != fleet.VerdictVerified {
			p := fleet.ProblemSignature + ": " + verdict
			if verr != nil {
				p += ": " + verr.Error()
			}
			problems = append(problems, p)
		}
		if !e.Chained() {
			problems = append(problems, fleet.ProblemUnchained+": the entry carries no prev and digest")
		} else if err := e.CheckDigest(fl, dev); err != nil {
			problems = append(problems, fleet.ProblemAltered+": "+err.Error())
		}
		other, reused, err := digestAt(seq)
		if err != nil {
			return fmt.Errorf("store write: audit entries: %w", err)
		}
		switch {
		case reused:
			problems = append(problems, fmt.Sprintf("%s: seq %d is already stored with digest %.12s", fleet.ProblemReused, seq, other))
		case seq == headSeq+1:
			if e.Chained() && e.Prev != headDigest && !(e.Prev == "" && !headChained) {
				problems = append(problems, fmt.Sprintf("%s: prev %.12s is not the stored head (seq %d, %.12s)", fleet.ProblemLink, e.Prev, headSeq, headDigest))
			}
		case seq > headSeq+1:
			problems = append(problems, fmt.Sprintf("gap: seq %d-%d missing before it", headSeq+1, seq-1))
		default:
			// A late entry into a gap: it must link to the stored entry
			// before it.
			before, ok, err := digestAt(seq - 1)
			if err != nil {
				return fmt.Errorf("store write: audit entries: %w", err)
			}
			if ok && e.Prev != before {
				problems = append(problems, fmt.Sprintf("%s: late entry's prev %.12s is not seq %d's digest %.12s", fleet.ProblemLink, e.Prev, seq-1, before))
			}
		}
		kid := ""
		if e.Signature != nil {
			kid = e.Signature.KeyID
		}
		if _, err := w.exec(ctx, "audit_entries", `INSERT INTO audit_entries (fleet, device, seq, digest, prev, time, kind, result, by_keys, kid, verdict, problems, payload, received)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			fl, dev, seq, e.Digest, e.Prev, d.tsMS(clampTime(e.Time)), e.Kind, e.Result, strings.Join(e.By, ","), kid, verdict,
			strings.Join(problems, "; "), a.payload, d.ts(a.received)); err != nil {
			return err
		}
		if seq > headSeq {
			headSeq, headDigest, headChained = seq, e.Digest, e.Chained()
		}
	}
	_, err = w.exec(ctx, "audit_heads", "UPDATE audit_heads SET seq = ?, digest = ?, device_key = ? WHERE fleet = ? AND device = ?", headSeq, headDigest, key, fl, dev)
	return err
}

func clampTime(ms int64) int64 { return min(max(ms, minTime), maxTime) }

// AuditRow is one stored device audit entry.
type AuditRow struct {
	Fleet    string            `json:"fleet"`
	Device   string            `json:"device"`
	Seq      uint64            `json:"seq"`
	Digest   string            `json:"digest"`
	Prev     string            `json:"prev"`
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"`
	Result   string            `json:"result"`
	By       []string          `json:"by"`
	KeyID    string            `json:"kid"`
	Verdict  string            `json:"verdict"`
	Problems string            `json:"problems,omitempty"` // found on insert
	Received time.Time         `json:"received"`
	Entry    *fleet.AuditEntry `json:"entry,omitempty"` // decoded from the stored payload
	payload  string
}

// AuditQuery selects stored audit entries: every device when Device is "".
type AuditQuery struct {
	Fleet, Device string
}

// AuditEntries returns the stored entries in fleet, device, seq order.
func (s *Store) AuditEntries(ctx context.Context, q AuditQuery) ([]AuditRow, error) {
	where, args := auditWhere(q)
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT fleet, device, seq, digest, prev, time, kind, result, by_keys, kid, verdict, problems, payload, received
FROM audit_entries`+where+` ORDER BY fleet, device, seq, received, digest`), args...)
	if err != nil {
		return nil, fmt.Errorf("audit entries: %w", err)
	}
	defer rows.Close()
	var out []AuditRow
	for rows.Next() {
		var r AuditRow
		var seq int64
		var t, rec nullTime
		var by string
		if err := rows.Scan(&r.Fleet, &r.Device, &seq, &r.Digest, &r.Prev, &t, &r.Kind, &r.Result, &by, &r.KeyID, &r.Verdict, &r.Problems, &r.payload, &rec); err != nil {
			return nil, fmt.Errorf("audit entries: %w", err)
		}
		r.Seq, r.Time, r.Received = uint64(seq), t.Time, rec.Time
		if by != "" {
			r.By = strings.Split(by, ",")
		}
		if e, err := fleet.DecodeAudit([]byte(r.payload)); err == nil {
			r.Entry = e
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func auditWhere(q AuditQuery) (string, []any) {
	var conds []string
	var args []any
	if q.Fleet != "" {
		conds, args = append(conds, "fleet = ?"), append(args, q.Fleet)
	}
	if q.Device != "" {
		conds, args = append(conds, "device = ?"), append(args, q.Device)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// ChainReport is the verdict on one device's stored chain.
type ChainReport struct {
	Fleet    string               `json:"fleet"`
	Device   string               `json:"device"`
	Entries  int                  `json:"entries"`
	HeadSeq  uint64               `json:"head_seq"`
	Problems []fleet.AuditProblem `json:"problems,omitempty"`
}

// VerifyAudit checks every stored chain from its stored payloads alone:
// each entry's digest and device signature, its row against the entry it
// holds, the prev links, the seqs from 1 to the head (a missing range is
// named, and said to have been deleted when it was stored without a gap),
// and the head. The columns are not trusted: the payload is the evidence.
func (s *Store) VerifyAudit(ctx context.Context, q AuditQuery) ([]ChainReport, error) {
	// Device by device, so that memory holds one device's chain at a time.
	where, args := auditWhere(q)
	dr, err := s.db.QueryContext(ctx, s.d.q("SELECT fleet, device, seq, digest FROM audit_heads"+where+" ORDER BY fleet, device"), args...)
	if err != nil {
		return nil, fmt.Errorf("audit heads: %w", err)
	}
	type head struct {
		fleet, device, digest string
		seq                   uint64
	}
	var heads []head
	for dr.Next() {
		var h head
		var seq int64
		if err := dr.Scan(&h.fleet, &h.device, &seq, &h.digest); err != nil {
			dr.Close()
			return nil, fmt.Errorf("audit heads: %w", err)
		}
		h.seq = uint64(seq)
		heads = append(heads, h)
	}
	dr.Close()
	if err := dr.Err(); err != nil {
		return nil, fmt.Errorf("audit heads: %w", err)
	}
	// A device with entries but no head: the head row was deleted.
	er, err := s.db.QueryContext(ctx, s.d.q("SELECT DISTINCT fleet, device FROM audit_entries"+where), args...)
	if err != nil {
		return nil, fmt.Errorf("audit entries: %w", err)
	}
	headless := map[[2]string]bool{}
	for er.Next() {
		var f, dv string
		if err := er.Scan(&f, &dv); err != nil {
			er.Close()
			return nil, fmt.Errorf("audit entries: %w", err)
		}
		if !slices.ContainsFunc(heads, func(h head) bool { return h.fleet == f && h.device == dv }) {
			heads = append(heads, head{fleet: f, device: dv})
			headless[[2]string{f, dv}] = true
		}
	}
	er.Close()
	if err := er.Err(); err != nil {
		return nil, fmt.Errorf("audit entries: %w", err)
	}
	slices.SortFunc(heads, func(a, b head) int {
		return cmp.Or(strings.Compare(a.fleet, b.fleet), strings.Compare(a.device, b.device))
	})
	var out []ChainReport
	for _, h := range heads {
		rows, err := s.AuditEntries(ctx, AuditQuery{Fleet: h.fleet, Device: h.device})
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			if h.seq > 0 {
				out = append(out, ChainReport{Fleet: h.fleet, Device: h.device, HeadSeq: h.seq, Problems: []fleet.AuditProblem{{FirstSeq: 1, LastSeq: h.seq, Problem: fleet.ProblemMissing, Detail: "every stored entry is gone: deleted"}}})
			}
			continue
		}
		rep, err := s.verifyDevice(ctx, rows, h.seq, h.digest)
		if err != nil {
			return nil, err
		}
		if headless[[2]string{h.fleet, h.device}] {
			rep.Problems = append(rep.Problems, fleet.AuditProblem{FirstSeq: rep.HeadSeq, LastSeq: rep.HeadSeq, Problem: fleet.ProblemHead, Detail: "the stored head is gone: deleted"})
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Store) verifyDevice(ctx context.Context, rows []AuditRow, headSeq uint64, headDigest string) (ChainReport, error) {
	fl, dev := rows[0].Fleet, rows[0].Device
	rep := ChainReport{Fleet: fl, Device: dev, Entries: len(rows)}
	key, err := s.deviceKey(ctx, s.db, fl, dev)
	if err != nil {
		return rep, err
	}
	var entries []*fleet.AuditEntry
	stored := map[uint64]string{} // seq -> the problems found on insert
	for _, r := range rows {
		if r.Entry == nil {
			rep.Problems = append(rep.Problems, fleet.AuditProblem{FirstSeq: r.Seq, LastSeq: r.Seq, Problem: fleet.ProblemAltered, Detail: "the stored payload no longer decodes"})
			continue
		}
		if r.Entry.Seq != r.Seq || r.Entry.Digest != r.Digest || r.Entry.Prev != r.Prev {
			rep.Problems = append(rep.Problems, fleet.AuditProblem{FirstSeq: r.Seq, LastSeq: r.Seq, Problem: fleet.ProblemOrder,
				Detail: fmt.Sprintf("the row for seq %d (digest %.12s) holds entry seq %d (digest %.12s): moved or swapped", r.Seq, r.Digest, r.Entry.Seq, r.Entry.Digest)})
		}
		entries = append(entries, r.Entry)
		stored[r.Entry.Seq] = r.Problems
	}
	fleet.SortAudit(entries)
	probs := fleet.CheckAuditChain(fleet.ChainCheck{Fleet: fl, Device: dev, DeviceKey: key, FromStart: true}, entries)
	for i, p := range probs {
		if p.Problem == fleet.ProblemMissing {
			if ins, ok := stored[p.LastSeq+1]; ok && !strings.Contains(ins, "gap:") {
				probs[i].Detail += "; the entry after them was stored without a gap: deleted since"
			} else if ok {
				probs[i].Detail += "; never arrived (the gap was seen on insert)"
			}
		}
	}
	rep.Problems = append(rep.Problems, probs...)
	if len(entries) > 0 {
		last := entries[len(entries)-1]
		rep.HeadSeq = last.Seq
		if headSeq > last.Seq {
			rep.HeadSeq = headSeq
			rep.Problems = append(rep.Problems, fleet.AuditProblem{FirstSeq: last.Seq + 1, LastSeq: headSeq, Problem: fleet.ProblemMissing,
				Detail: fmt.Sprintf("the stored head is seq %d, the last stored entry seq %d: deleted", headSeq, last.Seq)})
		} else if headSeq == last.Seq && headDigest != last.Digest {
			rep.Problems = append(rep.Problems, fleet.AuditProblem{FirstSeq: headSeq, LastSeq: headSeq, Problem: fleet.ProblemHead,
				Detail: fmt.Sprintf("the stored head's digest %.12s is not the last entry's %.12s", headDigest, last.Digest)})
		}
	}
	slices.SortStableFunc(rep.Problems, func(a, b fleet.AuditProblem) int { return cmp.Compare(a.FirstSeq, b.FirstSeq) })
	return rep, nil
}
