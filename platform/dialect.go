package platform

import (
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// dialect is what differs between PostgreSQL and SQLite. Queries are
// written once with "?" placeholders and CAST(... AS ...), which both
// accept; PostgreSQL gets "$n" placeholders.
type dialect int

const (
	dialectPostgres dialect = iota + 1
	dialectSQLite
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// q rewrites "?" placeholders for the dialect.
func (d dialect) q(query string) string {
	if d != dialectPostgres {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// sqliteTime is the text form of a time in SQLite: fixed width, so it
// sorts as times do.
const sqliteTime = "2006-01-02T15:04:05.000Z"

// ts is a time as a query argument.
func (d dialect) ts(t time.Time) any {
	t = t.UTC()
	if d == dialectSQLite {
		return t.Format(sqliteTime)
	}
	return t
}

// tsMS is a time in Unix milliseconds as a query argument.
func (d dialect) tsMS(ms int64) any { return d.ts(time.UnixMilli(ms)) }

// forUpdate locks the selected rows where the dialect can (SQLite's
// immediate transactions already hold the database's one write lock).
func (d dialect) forUpdate() string {
	if d == dialectPostgres {
		return " FOR UPDATE"
	}
	return ""
}

// nullTime scans a time column of either dialect.
type nullTime struct {
	Time  time.Time
	Valid bool
}

func (n *nullTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		n.Time, n.Valid = time.Time{}, false
		return nil
	case time.Time:
		n.Time, n.Valid = x.UTC(), true
		return nil
	case string:
		return n.parse(x)
	case []byte:
		return n.parse(string(x))
	}
	return fmt.Errorf("time column: unexpected %T", v)
}

func (n *nullTime) parse(s string) error {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time column: %w", err)
	}
	n.Time, n.Valid = t.UTC(), true
	return nil
}

var _ interface{ Scan(any) error } = (*nullTime)(nil)
var _ driver.Valuer = (*nullable)(nil)

// nullable is a value that is NULL when absent.
type nullable struct {
	v  any
	ok bool
}

func (n nullable) Value() (driver.Value, error) {
	if !n.ok {
		return nil, nil
	}
	return n.v, nil
}
