package web

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// auditLog writes the dashboard's audit trail and acknowledgements into the
// platform's database, in tables of its own.
type auditLog struct {
	db       *sql.DB
	postgres bool
}

const auditSchema = `CREATE TABLE IF NOT EXISTS web_audit (
	time   text NOT NULL,
	actor  text NOT NULL,
	role   text NOT NULL,
	action text NOT NULL,
	fleet  text NOT NULL,
	device text NOT NULL,
	detail text NOT NULL,
	remote text NOT NULL
);
CREATE TABLE IF NOT EXISTS web_acks (
	fleet  text   NOT NULL,
	device text   NOT NULL,
	boot   bigint NOT NULL,
	seq    bigint NOT NULL,
	actor  text   NOT NULL,
	time   text   NOT NULL,
	PRIMARY KEY (fleet, device, boot, seq)
)`

func (a *auditLog) q(query string) string {
	if !a.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

func (a *auditLog) init(ctx context.Context) error {
	for _, stmt := range strings.Split(auditSchema, ";") {
		if _, err := a.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("web audit schema: %w", err)
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// record writes one audit row; the caller refuses the action if it fails.
func (a *auditLog) record(ctx context.Context, u User, action, fleet, device, detail, remote string) error {
	_, err := a.db.ExecContext(ctx, a.q("INSERT INTO web_audit (time, actor, role, action, fleet, device, detail, remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
		stamp(time.Now()), u.Name, string(u.Role), action, fleet, device, detail, remote)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// ack records an acknowledgement and its audit row in one transaction.
func (a *auditLog) ack(ctx context.Context, u User, e emergencyKey, remote string) error {
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	defer tx.Rollback()
	now := stamp(time.Now())
	if _, err := tx.ExecContext(ctx, a.q("INSERT INTO web_acks (fleet, device, boot, seq, actor, time) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
		e.Fleet, e.Device, int64(e.Boot), int64(e.Seq), u.Name, now); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if _, err := tx.ExecContext(ctx, a.q("INSERT INTO web_audit (time, actor, role, action, fleet, device, detail, remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
		now, u.Name, string(u.Role), "ack-emergency", e.Fleet, e.Device, fmt.Sprintf("boot=%d seq=%d", e.Boot, e.Seq), remote); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// AuditRow is one row of web_audit.
type AuditRow struct {
	Time, Actor, Role, Action, Fleet, Device, Detail, Remote string
}

// Audit lists the audit trail, oldest first (for tests and tools).
func Audit(ctx context.Context, db *sql.DB) ([]AuditRow, error) {
	rows, err := db.QueryContext(ctx, "SELECT time, actor, role, action, fleet, device, detail, remote FROM web_audit ORDER BY time")
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	var out []AuditRow
	for rows.Next() {
		var r AuditRow
		if err := rows.Scan(&r.Time, &r.Actor, &r.Role, &r.Action, &r.Fleet, &r.Device, &r.Detail, &r.Remote); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
