package platform

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// The platform's part of the evidence chain (docs/evidence.md, "On the
// platform"): device keys pinned by enrolment and checked on ingest,
// signed checkpoints stored with the verdict of their signature, and
// evidence bundles rebuilt from the stored rows for kestrelctl verify.

// Key statuses of a device (devices.key_status).
const (
	KeyUnenrolled = "unenrolled" // the device announces a key nobody pinned
	KeyEnrolled   = "enrolled"   // it announces and signs with the enrolled key
	KeyChanged    = "changed"    // it announced or signed with another key: flagged
)

// Checkpoint verdicts at ingest (checkpoints.verdict).
const (
	VerdictEnrolled   = "enrolled"   // the enrolled key verifies it
	VerdictAnnounced  = "announced"  // no enrolment; the announced key verifies it
	VerdictUnverified = "unverified" // no trusted key verifies it
)

// enrolledSpans are a device's enrolments as key spans, oldest first.
func (w *batchWriter) enrolledSpans(ctx context.Context, fl, dev string) ([]evidence.KeySpan, error) {
	es, err := enrolments(ctx, w.tx, w.s.d, fl, dev)
	if err != nil {
		return nil, err
	}
	return evidence.KeySpans(es)
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func enrolments(ctx context.Context, q queryer, d dialect, fl, dev string) ([]evidence.Enrolment, error) {
	rows, err := q.QueryContext(ctx, d.q("SELECT device_key, key_id, from_seq, enrolled, enrolled_by, source, note, previous_key_id FROM enrolments WHERE fleet = ? AND device = ? ORDER BY id"), fl, dev)
	if err != nil {
		return nil, fmt.Errorf("enrolments: %w", err)
	}
	defer rows.Close()
	var out []evidence.Enrolment
	for rows.Next() {
		e := evidence.Enrolment{Fleet: fl, Device: dev}
		var from int64
		var at nullTime
		var prev sql.NullString
		if err := rows.Scan(&e.DeviceKey, &e.KeyID, &from, &at, &e.By, &e.Source, &e.Note, &prev); err != nil {
			return nil, fmt.Errorf("enrolments: %w", err)
		}
		e.FromSeq, e.Enrolled, e.PreviousKeyID = uint64(from), at.Time.Format(time.RFC3339Nano), prev.String
		out = append(out, e)
	}
	return out, rows.Err()
}

func lastKey(spans []evidence.KeySpan) ed25519.PublicKey {
	if len(spans) == 0 {
		return nil
	}
	return spans[len(spans)-1].Key
}

// checkKeys compares the keys of the batch's state messages with the
// devices' enrolments, and stores its checkpoints with the verdict of
// their signature. A device that announces, or signs with, a key other
// than its enrolled one is flagged (key_status changed), never trusted.
func (w *batchWriter) checkKeys(ctx context.Context, b *Batch, others []*Row, res *WriteResult) error {
	type devKey struct{ fleet, device string }
	announced := map[devKey]string{}
	for _, st := range b.States { // the newest state of the batch wins
		if st.DeviceKey != "" {
			announced[devKey{st.Fleet, st.Device}] = st.DeviceKey
		}
	}
	cks := map[devKey][]*Row{}
	for _, r := range others {
		if r.Record.Kind() == kestrel.KindCheckpoint {
			k := devKey{r.Fleet, r.Record.Device}
			cks[k] = append(cks[k], r)
		}
	}
	devs := make([]devKey, 0, len(announced)+len(cks))
	for k := range announced {
		devs = append(devs, k)
	}
	for k := range cks {
		if _, ok := announced[k]; !ok {
			devs = append(devs, k)
		}
	}
	slices.SortFunc(devs, func(a, b devKey) int {
		return cmp.Or(strings.Compare(a.fleet, b.fleet), strings.Compare(a.device, b.device))
	})
	for _, k := range devs {
		spans, err := w.enrolledSpans(ctx, k.fleet, k.device)
		if err != nil {
			return fmt.Errorf("store write: %w", err)
		}
		var stored, status sql.NullString
		err = w.tx.QueryRowContext(ctx, w.s.d.q("SELECT device_key, key_status FROM devices WHERE fleet = ? AND device = ?"+w.s.d.forUpdate()), k.fleet, k.device).Scan(&stored, &status)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("store write: device key: %w", err)
		}
		ann := announced[k]
		if ann == "" {
			ann = stored.String
		}
		var annKey ed25519.PublicKey
		if kb, err := base64.StdEncoding.DecodeString(ann); err == nil && len(kb) == ed25519.PublicKeySize {
			annKey = ed25519.PublicKey(kb)
		}
		newStatus := KeyUnenrolled
		if cur := lastKey(spans); cur != nil {
			newStatus = KeyEnrolled
			if annKey != nil && !bytes.Equal(annKey, cur) {
				newStatus = KeyChanged
			}
		}
		if status.String == KeyChanged && newStatus == KeyEnrolled {
			newStatus = KeyChanged // a flag stays until an explicit re-enrolment
		}
		var changedSeq *int64
		unverified := 0
		for _, r := range cks[k] {
			// One by one (checkpoints are rare): a redelivery inserts
			// nothing and counts nothing.
			c := r.Record.Body.(*kestrel.Checkpoint)
			verdict, keyID := VerdictUnverified, nullable{}
			key, _ := evidence.KeyFor(spans, r.Record.Seq)
			switch {
			case key != nil && evidence.VerifyCheckpoint(key, &r.Record) == nil:
				verdict, keyID = VerdictEnrolled, nullable{fleet.KeyID(key), true}
			case annKey != nil && evidence.VerifyCheckpoint(annKey, &r.Record) == nil:
				keyID = nullable{fleet.KeyID(annKey), true}
				if key == nil {
					verdict = VerdictAnnounced
				}
			}
			n, err := w.exec(ctx, "checkpoints", "INSERT INTO checkpoints (fleet, device, boot, seq, time, reason, from_seq, last_seq, count, head, sig, key_id, verdict, priority, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
				r.Fleet, r.Record.Device, int64(r.Record.Boot), int64(r.Record.Seq), w.s.d.tsMS(r.Record.Time),
				int64(c.Reason), int64(c.FromSeq), int64(c.LastSeq), int64(c.Count), c.Head, c.Sig, keyID, verdict,
				r.Record.Priority.String(), w.s.d.ts(r.Received))
			if err != nil {
				return err
			}
			if n == 0 || verdict != VerdictUnverified {
				continue
			}
			unverified++
			if key != nil {
				newStatus = KeyChanged
				s := int64(r.Record.Seq)
				if changedSeq == nil || s < *changedSeq {
					changedSeq = &s
				}
			}
		}
		if newStatus == KeyChanged && status.String != KeyChanged {
			res.KeyChanges++
			res.Flagged = append(res.Flagged, k.fleet+"/"+k.device)
		}
		res.UnverifiedCheckpoints += unverified
		if _, err := w.exec(ctx, "devices key", `INSERT INTO devices (fleet, device, device_key, key_status, key_changed, key_changed_seq, unverified_checkpoints) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (fleet, device) DO UPDATE SET device_key = coalesce(excluded.device_key, devices.device_key), key_status = excluded.key_status,
	key_changed = CASE WHEN excluded.key_status <> 'changed' THEN NULL ELSE coalesce(devices.key_changed, excluded.key_changed) END,
	key_changed_seq = CASE WHEN excluded.key_status <> 'changed' THEN NULL WHEN devices.key_changed_seq IS NULL OR excluded.key_changed_seq < devices.key_changed_seq THEN coalesce(excluded.key_changed_seq, devices.key_changed_seq) ELSE devices.key_changed_seq END,
	unverified_checkpoints = devices.unverified_checkpoints + excluded.unverified_checkpoints`,
			k.fleet, k.device, nullable{announced[k], announced[k] != ""}, newStatus, nullable{w.s.d.ts(w.now), newStatus == KeyChanged},
			nullable{derefInt(changedSeq), changedSeq != nil}, int64(unverified)); err != nil {
			return err
		}
	}
	return nil
}

func derefInt(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// EnrolRequest pins a device key.
type EnrolRequest struct {
	Fleet, Device string
	Key           ed25519.PublicKey
	By            string // who enrols (required)
	Source        string // where the key came from: "key" or "broker"
	Note          string
	// ReEnrol must be set to replace an enrolled key: an explicit act.
	ReEnrol bool
	// FromSeq is the first seq the new key signs for (nil: the first
	// checkpoint the platform saw signed by another key than the
	// enrolled one, else the next seq after everything stored).
	FromSeq *uint64
}

// ErrEnrolled is returned for an enrolment of a device that has another
// key enrolled, without ReEnrol.
var ErrEnrolled = errors.New("device has another key enrolled")

// Enrol records an enrolment (never updating or deleting an earlier one)
// and sets the device's key status from what it announces.
func (s *Store) Enrol(ctx context.Context, r EnrolRequest) (evidence.Enrolment, error) {
	if r.Fleet == "" || r.Device == "" || r.By == "" {
		return evidence.Enrolment{}, errors.New("enrol: fleet, device and who enrols are required")
	}
	if len(r.Key) != ed25519.PublicKeySize {
		return evidence.Enrolment{}, errors.New("enrol: not an Ed25519 public key")
	}
	if len(r.By) > 200 || len(r.Note) > 1000 || !storableText([]byte(r.By+r.Note)) {
		return evidence.Enrolment{}, errors.New("enrol: --by or --note too long, or not valid UTF-8 text")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return evidence.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	defer tx.Rollback()
	if s.d == dialectPostgres {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7424654)"); err != nil {
			return evidence.Enrolment{}, fmt.Errorf("enrol: lock: %w", err)
		}
	}
	es, err := enrolments(ctx, tx, s.d, r.Fleet, r.Device)
	if err != nil {
		return evidence.Enrolment{}, err
	}
	keyB64 := base64.StdEncoding.EncodeToString(r.Key)
	e := evidence.Enrolment{Fleet: r.Fleet, Device: r.Device, DeviceKey: keyB64, KeyID: fleet.KeyID(r.Key),
		Enrolled: nowUTC().Format(time.RFC3339Nano), By: r.By, Source: r.Source, Note: r.Note}
	var announced sql.NullString
	var changedSeq sql.NullInt64
	err = tx.QueryRowContext(ctx, s.d.q("SELECT device_key, key_changed_seq FROM devices WHERE fleet = ? AND device = ?"), r.Fleet, r.Device).Scan(&announced, &changedSeq)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return evidence.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	if n := len(es); n > 0 {
		cur := es[n-1]
		if cur.DeviceKey == keyB64 {
			return cur, fmt.Errorf("enrol: key %s is already the enrolled key of %s/%s", cur.KeyID, r.Fleet, r.Device)
		}
		if !r.ReEnrol {
			return evidence.Enrolment{}, fmt.Errorf("enrol: %w: %s/%s has key %s enrolled (by %s, %s); replacing it is an explicit act (--re-enrol)", ErrEnrolled, r.Fleet, r.Device, cur.KeyID, cur.By, cur.Enrolled)
		}
		e.PreviousKeyID = cur.KeyID
		switch {
		case r.FromSeq != nil:
			e.FromSeq = *r.FromSeq
		case changedSeq.Valid:
			e.FromSeq = uint64(changedSeq.Int64)
		default:
			var max sql.NullInt64
			if err := tx.QueryRowContext(ctx, s.d.q("SELECT max(seq) FROM checkpoints WHERE fleet = ? AND device = ?"), r.Fleet, r.Device).Scan(&max); err != nil {
				return evidence.Enrolment{}, fmt.Errorf("enrol: %w", err)
			}
			e.FromSeq = uint64(max.Int64) + 1
		}
	} else if r.FromSeq != nil {
		e.FromSeq = *r.FromSeq
	}
	if e.FromSeq > math.MaxInt64 {
		return evidence.Enrolment{}, errors.New("enrol: from seq out of range")
	}
	if _, err := tx.ExecContext(ctx, s.d.q("INSERT INTO enrolments (fleet, device, device_key, key_id, from_seq, enrolled, enrolled_by, source, note, previous_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		r.Fleet, r.Device, keyB64, e.KeyID, int64(e.FromSeq), s.d.ts(nowUTC()), r.By, r.Source, r.Note, nullable{e.PreviousKeyID, e.PreviousKeyID != ""}); err != nil {
		return evidence.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	status := KeyEnrolled
	if announced.Valid && announced.String != keyB64 {
		status = KeyChanged
	}
	if _, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO devices (fleet, device, key_status) VALUES (?, ?, ?)
ON CONFLICT (fleet, device) DO UPDATE SET key_status = excluded.key_status,
	key_changed = CASE WHEN excluded.key_status = 'changed' THEN devices.key_changed END,
	key_changed_seq = CASE WHEN excluded.key_status = 'changed' THEN devices.key_changed_seq END`), r.Fleet, r.Device, status); err != nil {
		return evidence.Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return evidence.Enrolment{}, fmt.Errorf("enrol: commit: %w", err)
	}
	return e, nil
}

// Enrolments is a device's enrolment history, oldest first.
func (s *Store) Enrolments(ctx context.Context, fl, dev string) ([]evidence.Enrolment, error) {
	return enrolments(ctx, s.db, s.d, fl, dev)
}

// DeviceKey is a device's key status for kestrelctl device list and status.
type DeviceKey struct {
	Fleet       string     `json:"fleet"`
	Device      string     `json:"device"`
	Announced   string     `json:"device_key,omitempty"` // the last announced key, base64
	AnnouncedID string     `json:"key_id,omitempty"`
	Status      string     `json:"key_status"` // unenrolled, enrolled, changed
	Changed     *time.Time `json:"key_changed,omitempty"`
	ChangedSeq  *uint64    `json:"key_changed_seq,omitempty"`
	// Unverified counts the checkpoints no trusted key verified at ingest.
	Unverified int64 `json:"unverified_checkpoints"`
	// Checkpoints counts stored checkpoints by verdict at ingest.
	Checkpoints map[string]int64     `json:"checkpoints,omitempty"`
	Enrolments  []evidence.Enrolment `json:"enrolments,omitempty"`
}

// DeviceKeys lists the key status of a fleet's devices (every fleet when
// fl is empty), or of one device when dev is set, with enrolments.
func (s *Store) DeviceKeys(ctx context.Context, fl, dev string) ([]DeviceKey, error) {
	var where []string
	var args []any
	if fl != "" {
		where, args = append(where, "fleet = ?"), append(args, fl)
	}
	if dev != "" {
		where, args = append(where, "device = ?"), append(args, dev)
	}
	q := "SELECT fleet, device, device_key, key_status, key_changed, key_changed_seq, unverified_checkpoints FROM devices"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(q+" ORDER BY fleet, device"), args...)
	if err != nil {
		return nil, fmt.Errorf("device keys: %w", err)
	}
	var out []DeviceKey
	for rows.Next() {
		var k DeviceKey
		var key, status sql.NullString
		var changed nullTime
		var seq sql.NullInt64
		if err := rows.Scan(&k.Fleet, &k.Device, &key, &status, &changed, &seq, &k.Unverified); err != nil {
			rows.Close()
			return nil, fmt.Errorf("device keys: %w", err)
		}
		k.Announced, k.Status = key.String, cmp.Or(status.String, KeyUnenrolled)
		if pk, err := base64.StdEncoding.DecodeString(k.Announced); err == nil && len(pk) == ed25519.PublicKeySize {
			k.AnnouncedID = fleet.KeyID(pk)
		}
		if changed.Valid {
			k.Changed = &changed.Time
		}
		if seq.Valid {
			u := uint64(seq.Int64)
			k.ChangedSeq = &u
		}
		out = append(out, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("device keys: %w", err)
	}
	for i := range out {
		k := &out[i]
		if k.Enrolments, err = s.Enrolments(ctx, k.Fleet, k.Device); err != nil {
			return nil, err
		}
		rows, err := s.db.QueryContext(ctx, s.d.q("SELECT verdict, count(*) FROM checkpoints WHERE fleet = ? AND device = ? GROUP BY verdict"), k.Fleet, k.Device)
		if err != nil {
			return nil, fmt.Errorf("device keys: %w", err)
		}
		for rows.Next() {
			var v string
			var n int64
			if err := rows.Scan(&v, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("device keys: %w", err)
			}
			if k.Checkpoints == nil {
				k.Checkpoints = map[string]int64{}
			}
			k.Checkpoints[v] = n
		}
		rows.Close()
	}
	return out, nil
}

// EvidenceQuery selects a device's records for an evidence bundle.
type EvidenceQuery struct {
	Fleet  string // empty: the one fleet the device is in
	Device string
	From   time.Time // zero: from the first record
	To     time.Time // zero: to the last; exclusive
}

// maxNotes bounds the problems an export records in its header.
const maxNotes = 1000

// EvidenceBundle rebuilds a device's records in a time range from the
// stored rows, widened by seq to the signed checkpoints that enclose it
// (docs/evidence.md, "Export from the database"), with the device's
// announced key and enrolment history. A row that is not one the device
// could have sent (a value that ingest would not have written, a column
// that disagrees with the record's flags) is left out or kept, and named
// in the header's notes: the verifier reports them.
func (s *Store) EvidenceBundle(ctx context.Context, q EvidenceQuery) (*evidence.Bundle, error) {
	if q.Device == "" {
		return nil, errors.New("evidence: a device is required")
	}
	fl, err := s.fleetOf(ctx, q.Fleet, q.Device)
	if err != nil {
		return nil, err
	}
	lo, hi, ok, err := s.seqBounds(ctx, fl, q)
	if err != nil {
		return nil, err
	}
	b := &evidence.Bundle{Header: evidence.Header{Format: evidence.BundleFormat, Fleet: fl, Device: q.Device, Exported: nowUTC().Format(time.RFC3339)}}
	if !q.From.IsZero() {
		b.Header.From = q.From.UTC().Format(time.RFC3339Nano)
	}
	if !q.To.IsZero() {
		b.Header.To = q.To.UTC().Format(time.RFC3339Nano)
	}
	if b.Header.Enrolment, err = s.Enrolments(ctx, fl, q.Device); err != nil {
		return nil, err
	}
	var announced sql.NullString
	if err := s.db.QueryRowContext(ctx, s.d.q("SELECT device_key FROM devices WHERE fleet = ? AND device = ?"), fl, q.Device).Scan(&announced); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	b.Header.DeviceKey = announced.String
	if b.Header.DeviceKey == "" && len(b.Header.Enrolment) > 0 {
		b.Header.DeviceKey = b.Header.Enrolment[len(b.Header.Enrolment)-1].DeviceKey
	}
	key, err := base64.StdEncoding.DecodeString(b.Header.DeviceKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("evidence: no device key known for %s/%s (no state message with device_key and no enrolment)", fl, q.Device)
	}
	b.Key = ed25519.PublicKey(key)
	var notes []evidence.Problem
	note := func(p evidence.Problem) {
		if len(notes) < maxNotes {
			notes = append(notes, p)
		} else if len(notes) == maxNotes {
			notes = append(notes, evidence.Problem{Seq: p.Seq, Kind: p.Kind, Detail: "and more problems in the stored rows, not listed"})
		}
	}
	if len(b.Header.Enrolment) == 0 {
		note(evidence.Problem{Kind: "key", Detail: fmt.Sprintf("%s/%s is not enrolled: its checkpoints were checked against the key it announces (%s), which nobody pinned (kestrelctl device enrol)", fl, q.Device, fleet.KeyID(b.Key))})
	}
	if !ok {
		b.Header.Notes = notes
		return b, nil
	}
	start, end, err := s.enclosing(ctx, fl, q.Device, lo, hi)
	if err != nil {
		return nil, err
	}
	b.Header.FirstSeq = start
	// Counted before anything is read: a bundle is bounded.
	total := 0
	for _, t := range recordTables {
		var n int
		if err := s.db.QueryRowContext(ctx, s.d.q("SELECT count(*) FROM "+t+" WHERE fleet = ? AND device = ? AND seq >= ? AND seq <= ?"), fl, q.Device, int64(start), int64(end)).Scan(&n); err != nil {
			return nil, fmt.Errorf("evidence: %s: %w", t, err)
		}
		total += n
	}
	if total > evidence.MaxRecords {
		return nil, fmt.Errorf("evidence: %d records in the range: more than a bundle holds (%d); export a shorter range", total, evidence.MaxRecords)
	}
	if b.Records, err = s.rebuild(ctx, fl, q.Device, start, end, note); err != nil {
		return nil, err
	}
	b.Header.Notes = notes
	return b, nil
}

func (s *Store) fleetOf(ctx context.Context, fl, dev string) (string, error) {
	if fl != "" {
		return fl, nil
	}
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT fleet FROM devices WHERE device = ? ORDER BY fleet"), dev)
	if err != nil {
		return "", fmt.Errorf("evidence: %w", err)
	}
	defer rows.Close()
	var fleets []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return "", fmt.Errorf("evidence: %w", err)
		}
		fleets = append(fleets, f)
	}
	switch len(fleets) {
	case 0:
		return "", fmt.Errorf("evidence: the platform has no device %q", dev)
	case 1:
		return fleets[0], nil
	}
	return "", fmt.Errorf("evidence: device %q is in fleets %s: name one (--fleet)", dev, strings.Join(fleets, ", "))
}

// recordTables are the tables that hold a device's records.
var recordTables = []string{"positions", "events", "records"}

// seqBounds is the lowest and highest seq of the device's records in the
// time range.
func (s *Store) seqBounds(ctx context.Context, fl string, q EvidenceQuery) (lo, hi uint64, ok bool, err error) {
	where := "fleet = ? AND device = ?"
	args := []any{fl, q.Device}
	if !q.From.IsZero() {
		where += " AND time >= ?"
		args = append(args, s.d.ts(q.From))
	}
	if !q.To.IsZero() {
		where += " AND time < ?"
		args = append(args, s.d.ts(q.To))
	}
	for _, t := range recordTables {
		var mn, mx sql.NullInt64
		if err := s.db.QueryRowContext(ctx, s.d.q("SELECT min(seq), max(seq) FROM "+t+" WHERE "+where), args...).Scan(&mn, &mx); err != nil {
			return 0, 0, false, fmt.Errorf("evidence: %s: %w", t, err)
		}
		if !mn.Valid {
			continue
		}
		if !ok || uint64(mn.Int64) < lo {
			lo = uint64(mn.Int64)
		}
		if !ok || uint64(mx.Int64) > hi {
			hi = uint64(mx.Int64)
		}
		ok = true
	}
	return lo, hi, ok, nil
}

// enclosing widens [lo, hi] to the checkpoint before lo (the anchor the
// next checkpoint's range starts from; 0 from the genesis) and the first
// checkpoint whose range reaches hi (the device's last seq when none has:
// an unproven tail).
func (s *Store) enclosing(ctx context.Context, fl, dev string, lo, hi uint64) (start, end uint64, err error) {
	var a sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.d.q("SELECT max(seq) FROM checkpoints WHERE fleet = ? AND device = ? AND seq < ?"), fl, dev, int64(lo)).Scan(&a); err != nil {
		return 0, 0, fmt.Errorf("evidence: anchor: %w", err)
	}
	start = uint64(a.Int64)
	var e sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.d.q("SELECT min(seq) FROM checkpoints WHERE fleet = ? AND device = ? AND seq >= ? AND reason <> ? AND (seq = ? OR last_seq >= ?)"),
		fl, dev, int64(hi), int64(kestrel.CheckpointBoot), int64(hi), int64(hi)).Scan(&e); err != nil {
		return 0, 0, fmt.Errorf("evidence: closing checkpoint: %w", err)
	}
	if e.Valid {
		return start, uint64(e.Int64), nil
	}
	end = hi
	for _, t := range recordTables {
		var mx sql.NullInt64
		if err := s.db.QueryRowContext(ctx, s.d.q("SELECT max(seq) FROM "+t+" WHERE fleet = ? AND device = ?"), fl, dev).Scan(&mx); err != nil {
			return 0, 0, fmt.Errorf("evidence: %w", err)
		}
		if mx.Valid && uint64(mx.Int64) > end {
			end = uint64(mx.Int64)
		}
	}
	return start, end, nil
}

// exactFixed is the integer n whose float64(n)/scale ingest stored as v,
// if v is exactly such a value within [lo, hi].
func exactFixed(v, scale float64, lo, hi int64) (int64, bool) {
	r := math.Round(v * scale)
	if math.IsNaN(r) || r < float64(lo) || r > float64(hi) {
		return 0, false
	}
	n := int64(r)
	return n, float64(n)/scale == v
}

// rebuild reads the device's rows with seq in [start, end] back into
// records, in seq order.
func (s *Store) rebuild(ctx context.Context, fl, dev string, start, end uint64, note func(evidence.Problem)) ([]kestrel.Record, error) {
	var out []kestrel.Record
	args := []any{fl, dev, int64(start), int64(end)}
	const where = " WHERE fleet = ? AND device = ? AND seq >= ? AND seq <= ? ORDER BY seq"
	env := func(table string, boot, seq int64, t nullTime) (kestrel.Envelope, bool) {
		e := kestrel.Envelope{Device: dev, Boot: uint32(boot), Seq: uint64(seq), Time: t.Time.UnixMilli()}
		if boot < 0 || boot > math.MaxUint32 || !t.Valid || t.Time.Nanosecond()%int(time.Millisecond) != 0 {
			note(evidence.Problem{Seq: uint64(seq), Kind: "altered", Detail: fmt.Sprintf("%s row seq %d: boot or time is not a value the device sent", table, seq)})
			return e, false
		}
		return e, true
	}
	// Positions, from their columns: what the platform serves is what is
	// verified.
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT boot, seq, time, lat, lon, alt, speed, track, mode, sats, hdop, priority, eph, epv, coarsened, flags FROM positions"+where), args...)
	if err != nil {
		return nil, fmt.Errorf("evidence: positions: %w", err)
	}
	for rows.Next() {
		var boot, seq, mode, coarsened int64
		var t nullTime
		var lat, lon float64
		var alt, speed, track, hdop, eph, epv sql.NullFloat64
		var sats, flags sql.NullInt64
		var prio string
		if err := rows.Scan(&boot, &seq, &t, &lat, &lon, &alt, &speed, &track, &mode, &sats, &hdop, &prio, &eph, &epv, &coarsened, &flags); err != nil {
			rows.Close()
			return nil, fmt.Errorf("evidence: positions: %w", err)
		}
		e, good := env("positions", boot, seq, t)
		bad := func(what string) {
			good = false
			note(evidence.Problem{Seq: uint64(seq), Kind: "altered", Detail: fmt.Sprintf("positions row seq %d: %s is not a value the device sent", seq, what)})
		}
		p := &kestrel.Position{}
		if n, ok := exactFixed(lat, 1e7, -900000000, 900000000); ok {
			p.Lat = int32(n)
		} else {
			bad("lat")
		}
		if n, ok := exactFixed(lon, 1e7, -1800000000, 1800000000); ok {
			p.Lon = int32(n)
		} else {
			bad("lon")
		}
		var f kestrel.PosFlags
		derived := kestrel.PosFlags(0)
		opt := func(v sql.NullFloat64, flag kestrel.PosFlags, scale float64, lo, hi int64, name string) int64 {
			if v.Valid {
				derived |= flag
				n, ok := exactFixed(v.Float64, scale, lo, hi)
				if !ok {
					bad(name)
				}
				return n
			}
			return 0
		}
		p.Alt = int32(opt(alt, kestrel.HasAlt, 100, math.MinInt32, math.MaxInt32, "alt"))
		p.Speed = int32(opt(speed, kestrel.HasSpeed, 100, math.MinInt32, math.MaxInt32, "speed"))
		p.Track = uint16(opt(track, kestrel.HasTrack, 100, 0, math.MaxUint16, "track"))
		p.HDOP = uint16(opt(hdop, kestrel.HasHDOP, 100, 0, math.MaxUint16, "hdop"))
		p.EPH = uint32(opt(eph, kestrel.HasEPH, 100, 0, math.MaxUint32, "eph"))
		p.EPV = uint32(opt(epv, kestrel.HasEPV, 100, 0, math.MaxUint32, "epv"))
		if sats.Valid {
			derived |= kestrel.HasSats
			if sats.Int64 < 0 || sats.Int64 > math.MaxUint8 {
				bad("sats")
			}
			p.Sats = uint8(sats.Int64)
		}
		if mode < 0 || mode > math.MaxUint8 {
			bad("mode")
		}
		if coarsened < 0 || coarsened > math.MaxUint32 {
			bad("coarsened")
		}
		p.Mode, p.Coarsened = kestrel.FixMode(mode), uint32(coarsened)
		f = derived
		if flags.Valid {
			if flags.Int64 < 0 || flags.Int64 > math.MaxUint16 {
				bad("flags")
			}
			f = kestrel.PosFlags(flags.Int64)
			const known = kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP | kestrel.HasEPH | kestrel.HasEPV
			if f&known != derived {
				bad(fmt.Sprintf("the set of non-NULL columns (flags %#x) against the flags %#x", uint16(derived), uint16(f&known)))
			}
		}
		p.Flags = f
		e.Priority, _ = kestrel.ParsePriority(prio)
		if good {
			out = append(out, kestrel.Record{Envelope: e, Body: p})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence: positions: %w", err)
	}
	// Events, from their columns.
	rows, err = s.db.QueryContext(ctx, s.d.q("SELECT boot, seq, time, type, source, name, value, text, priority FROM events"+where), args...)
	if err != nil {
		return nil, fmt.Errorf("evidence: events: %w", err)
	}
	for rows.Next() {
		var boot, seq int64
		var t nullTime
		var ev kestrel.Event
		var typ, prio string
		if err := rows.Scan(&boot, &seq, &t, &typ, &ev.Source, &ev.Name, &ev.Value, &ev.Text, &prio); err != nil {
			rows.Close()
			return nil, fmt.Errorf("evidence: events: %w", err)
		}
		e, good := env("events", boot, seq, t)
		if et, ok := parseEventType(typ); ok {
			ev.Type = et
		} else {
			good = false
			note(evidence.Problem{Seq: uint64(seq), Kind: "altered", Detail: fmt.Sprintf("events row seq %d: type %q is not one the device sends", seq, typ)})
		}
		e.Priority, _ = kestrel.ParsePriority(prio)
		if good {
			out = append(out, kestrel.Record{Envelope: e, Body: &ev})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence: events: %w", err)
	}
	// Every other kind, checkpoints included, from the record as sent;
	// its JSON body (what the platform serves) must say the same.
	cks, err := s.checkpointRows(ctx, args, where)
	if err != nil {
		return nil, err
	}
	rows, err = s.db.QueryContext(ctx, s.d.q("SELECT boot, seq, time, kind, body, record_wire FROM records"+where), args...)
	if err != nil {
		return nil, fmt.Errorf("evidence: records: %w", err)
	}
	var js []byte
	for rows.Next() {
		var boot, seq int64
		var t nullTime
		var kind, body string
		var raw []byte
		if err := rows.Scan(&boot, &seq, &t, &kind, &body, &raw); err != nil {
			rows.Close()
			return nil, fmt.Errorf("evidence: records: %w", err)
		}
		e, good := env("records", boot, seq, t)
		bad := func(why string) {
			good = false
			note(evidence.Problem{Seq: uint64(seq), Kind: "altered", Detail: fmt.Sprintf("records row seq %d (%s): %s", seq, kind, why)})
		}
		var rec kestrel.Record
		if raw == nil {
			bad("stored without its record_wire (before migration 015): it cannot be rebuilt exactly")
		} else if rec, err = wire.DecodeRecord(raw); err != nil {
			bad(fmt.Sprintf("record_wire does not decode: %v", err))
		} else if rec.Device != e.Device || rec.Boot != e.Boot || rec.Seq != e.Seq || rec.Time != e.Time || rec.Kind().String() != kind {
			bad("record_wire names another device, boot, seq, time or kind than the row")
		} else {
			js = wire.AppendJSON(js[:0], &rec)
			if !sameJSON(js, []byte(body)) {
				bad("the stored JSON body differs from the record as sent")
			}
			if c, ok := rec.Body.(*kestrel.Checkpoint); ok {
				row, found := cks[uint64(seq)]
				switch {
				case !found:
					bad("no row in the checkpoints table")
				case row.Boot != rec.Boot || row.Time != rec.Time || !reflect.DeepEqual(*row.Body.(*kestrel.Checkpoint), *c):
					bad("the checkpoints table's row differs from the record as sent")
				}
				delete(cks, uint64(seq))
			}
		}
		if good {
			out = append(out, rec)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence: records: %w", err)
	}
	for seq, r := range cks {
		// A checkpoint the records table lacks: the checkpoints table's
		// copy still carries it.
		note(evidence.Problem{Seq: seq, Kind: "missing", Detail: fmt.Sprintf("checkpoint seq %d is in the checkpoints table but its records row is gone", seq)})
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b kestrel.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// checkpointRows reads the checkpoints table's rows in the range by seq.
func (s *Store) checkpointRows(ctx context.Context, args []any, where string) (map[uint64]kestrel.Record, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT boot, seq, time, reason, from_seq, last_seq, count, head, sig, priority FROM checkpoints"+where), args...)
	if err != nil {
		return nil, fmt.Errorf("evidence: checkpoints: %w", err)
	}
	defer rows.Close()
	out := map[uint64]kestrel.Record{}
	for rows.Next() {
		var boot, seq, reason, from, last, count int64
		var t nullTime
		var prio string
		c := &kestrel.Checkpoint{}
		if err := rows.Scan(&boot, &seq, &t, &reason, &from, &last, &count, &c.Head, &c.Sig, &prio); err != nil {
			return nil, fmt.Errorf("evidence: checkpoints: %w", err)
		}
		c.Reason, c.FromSeq, c.LastSeq, c.Count = kestrel.CheckpointReason(reason), uint64(from), uint64(last), uint64(count)
		r := kestrel.Record{Envelope: kestrel.Envelope{Device: args[1].(string), Boot: uint32(boot), Seq: uint64(seq), Time: t.Time.UnixMilli()}, Body: c}
		r.Priority, _ = kestrel.ParsePriority(prio)
		out[uint64(seq)] = r
	}
	return out, rows.Err()
}

// sameJSON compares two JSON documents by value (PostgreSQL's jsonb
// reorders keys and respaces), numbers by their text.
func sameJSON(a, b []byte) bool {
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// parseEventType is the inverse of EventType.String, "event(N)" included.
func parseEventType(s string) (kestrel.EventType, bool) {
	if s == kestrel.EventUnknown.String() {
		return kestrel.EventUnknown, true
	}
	if t, err := kestrel.ParseEventType(s); err == nil {
		return t, true
	}
	if n, ok := strings.CutPrefix(s, "event("); ok {
		if v, err := strconv.ParseUint(strings.TrimSuffix(n, ")"), 10, 16); err == nil && strings.HasSuffix(n, ")") && kestrel.EventType(v).String() == s {
			return kestrel.EventType(v), true
		}
	}
	return 0, false
}
