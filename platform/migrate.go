package platform

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrations holds the schema, one directory per dialect; files are
// NNN_name.sql, applied in order once each and recorded in
// schema_migrations. A file named NNN_name.postgis.sql is applied only where
// the postgis extension is available (and recorded only then).
//
//go:embed migrations
var migrations embed.FS

type migration struct {
	version int
	name    string
	postgis bool
	sql     string
}

func loadMigrations(d dialect) ([]migration, error) {
	dir := path.Join("migrations", d.String())
	ents, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		n := e.Name()
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(n, ".sql") {
			return nil, fmt.Errorf("migration %s: want NNN_name.sql", n)
		}
		b, err := fs.ReadFile(migrations, path.Join(dir, n))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: n, postgis: strings.HasSuffix(n, ".postgis.sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].name, ms[i].name, ms[i].version)
		}
	}
	return ms, nil
}

// SchemaVersion is the highest migration this build knows.
func SchemaVersion() int {
	ms, _ := loadMigrations(dialectSQLite)
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies what is missing, each migration in its own transaction.
// On PostgreSQL an advisory lock makes concurrent instances take turns.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.d)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if s.d == dialectPostgres {
		var n int
		if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'").Scan(&n); err != nil {
			return fmt.Errorf("store: look for postgis: %w", err)
		}
		s.postgis = n > 0
	}
	for _, m := range ms {
		if m.postgis && !s.postgis {
			continue
		}
		if err := s.apply(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) apply(ctx context.Context, m migration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	defer tx.Rollback()
	if s.d == dialectPostgres {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7424653)"); err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied text NOT NULL)"); err != nil {
		return fmt.Errorf("store: schema_migrations: %w", err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.d.q("SELECT count(*) FROM schema_migrations WHERE version = ?"), m.version).Scan(&n); err != nil {
		return fmt.Errorf("store: schema_migrations: %w", err)
	}
	if n > 0 {
		return nil
	}
	if s.d == dialectSQLite {
		// The SQLite driver runs one statement per Exec call.
		for _, st := range splitSQL(m.sql) {
			if _, err := tx.ExecContext(ctx, st); err != nil {
				return fmt.Errorf("store: migration %s: %w", m.name, err)
			}
		}
	} else if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("store: migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, s.d.q("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)"),
		m.version, m.name, fmt.Sprint(s.d.ts(nowUTC()))); err != nil {
		return fmt.Errorf("store: record migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migration %s: commit: %w", m.name, err)
	}
	return nil
}

// splitSQL splits a migration into statements on ";" at line ends, with
// "--" comments removed. Migrations hold no ";" inside literals.
func splitSQL(src string) []string {
	var b strings.Builder
	for _, line := range strings.Split(src, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	var out []string
	for _, st := range strings.Split(b.String(), ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}
