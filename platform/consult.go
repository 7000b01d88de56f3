package platform

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Consultation is one read of personal data from the platform database
// (DPA 2018 s.62 "consultation" and "disclosure"): who read what, when,
// and how it ended. The rows form one hash chain per platform database.
type Consultation struct {
	Seq      uint64 `json:"seq"`
	Time     int64  `json:"time"`     // ms since the epoch
	Operator string `json:"operator"` // the person: --operator, KESTREL_OPERATOR or the OS user
	KeyID    string `json:"kid"`      // the signing key the operator gave, if any
	Command  string `json:"command"`  // "track", "status --db", ...
	Fleet    string `json:"fleet"`
	Device   string `json:"device"` // "" for every device
	From     int64  `json:"from"`   // ms; 0: open
	To       int64  `json:"to"`     // ms; 0: open
	Detail   string `json:"detail"` // the rest of the request (format, limit) and what it returned
	Outcome  string `json:"outcome"`
	Prev     string `json:"prev"`
	Digest   string `json:"digest"`
}

const consultFormat = "kestrel-consultation/1"

// maxConsultText bounds each text field of a consultation.
const maxConsultText = 4096

// ConsultationDigest is the row's digest: SHA-256 over the format and the
// row's JSON with digest "" (fields in declaration order).
func ConsultationDigest(c Consultation) string {
	c.Digest = ""
	b, _ := json.Marshal(c)
	h := sha256.Sum256(append([]byte(consultFormat+"\n"), b...))
	return hex.EncodeToString(h[:])
}

// LogConsultation appends c to the chain (it fills Seq, Prev, Digest and,
// if zero, Time) and returns the stored row.
func (s *Store) LogConsultation(ctx context.Context, c Consultation) (Consultation, error) {
	if c.Operator == "" || c.Command == "" {
		return c, errors.New("consultation: operator and command are required")
	}
	for _, f := range []*string{&c.Operator, &c.KeyID, &c.Command, &c.Fleet, &c.Device, &c.Detail, &c.Outcome} {
		if len(*f) > maxConsultText {
			*f = (*f)[:maxConsultText]
		}
		*f = cleanText(*f)
	}
	if c.Time == 0 {
		c.Time = time.Now().UnixMilli()
	}
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		var out Consultation
		if out, err = s.logConsultationOnce(ctx, c); err == nil {
			return out, nil
		}
		if !retryable(err) && !strings.Contains(err.Error(), "UNIQUE") || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	return c, err
}

func (s *Store) logConsultationOnce(ctx context.Context, c Consultation) (Consultation, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return c, fmt.Errorf("consultation: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	var prev string
	err = tx.QueryRowContext(ctx, "SELECT seq, digest FROM consultations ORDER BY seq DESC LIMIT 1"+s.d.forUpdate()).Scan(&seq, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("consultation: head: %w", err)
	}
	c.Seq, c.Prev = uint64(seq+1), prev
	c.Digest = ConsultationDigest(c)
	if _, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO consultations (seq, time_ms, operator, kid, command, fleet, device, range_from, range_to, detail, outcome, prev, digest)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), int64(c.Seq), c.Time, c.Operator, c.KeyID, c.Command, c.Fleet, c.Device, c.From, c.To, c.Detail, c.Outcome, c.Prev, c.Digest); err != nil {
		return c, fmt.Errorf("consultation: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return c, fmt.Errorf("consultation: commit: %w", err)
	}
	return c, nil
}

// Consultations returns the chain in seq order (device "": all).
func (s *Store) Consultations(ctx context.Context, device string) ([]Consultation, error) {
	q := "SELECT seq, time_ms, operator, kid, command, fleet, device, range_from, range_to, detail, outcome, prev, digest FROM consultations"
	var args []any
	if device != "" {
		q += " WHERE device = ?"
		args = append(args, device)
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(q+" ORDER BY seq"), args...)
	if err != nil {
		return nil, fmt.Errorf("consultations: %w", err)
	}
	defer rows.Close()
	var out []Consultation
	for rows.Next() {
		var c Consultation
		var seq int64
		if err := rows.Scan(&seq, &c.Time, &c.Operator, &c.KeyID, &c.Command, &c.Fleet, &c.Device, &c.From, &c.To, &c.Detail, &c.Outcome, &c.Prev, &c.Digest); err != nil {
			return nil, fmt.Errorf("consultations: %w", err)
		}
		c.Seq = uint64(seq)
		out = append(out, c)
	}
	return out, rows.Err()
}

// VerifyConsultations checks the whole chain: each row's digest against
// its content, the prev links, and seqs from 1 without a gap. (A row cut
// from the end leaves no trace in the chain itself: the chain proves the
// rows it holds are as written and in order, and that none is missing
// before the last.)
func (s *Store) VerifyConsultations(ctx context.Context) ([]fleet.AuditProblem, error) {
	cs, err := s.Consultations(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []fleet.AuditProblem
	add := func(first, last uint64, problem, detail string) {
		out = append(out, fleet.AuditProblem{FirstSeq: first, LastSeq: last, Problem: problem, Detail: detail})
	}
	var prev *Consultation
	for i := range cs {
		c := &cs[i]
		if d := ConsultationDigest(*c); d != c.Digest {
			add(c.Seq, c.Seq, fleet.ProblemAltered, fmt.Sprintf("digest %.12s does not match the row (%.12s)", c.Digest, d))
		}
		want := uint64(1)
		wantPrev := ""
		if prev != nil {
			want, wantPrev = prev.Seq+1, prev.Digest
		}
		switch {
		case c.Seq > want:
			add(want, c.Seq-1, fleet.ProblemMissing, fmt.Sprintf("%d consultation rows deleted", c.Seq-want))
		case c.Prev != wantPrev:
			add(c.Seq, c.Seq, fleet.ProblemLink, fmt.Sprintf("prev %.12s is not the digest before it (%.12s)", c.Prev, wantPrev))
		}
		prev = c
	}
	return out, nil
}
