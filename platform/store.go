package platform

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	kestrel "github.com/kestrel-edge/kestrel"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", no cgo
)

// Store is a platform database: PostgreSQL or SQLite.
type Store struct {
	db      *sql.DB
	d       dialect
	url     string
	postgis bool

	mu         sync.Mutex
	partitions map[string]bool // PostgreSQL: monthly positions partitions known to exist
	closeOnce  sync.Once
}

// Open opens the database named by url, postgres://... (or postgresql://)
// or sqlite:FILE, and brings its schema up to date.
func Open(ctx context.Context, url string) (*Store, error) {
	s := &Store{url: url, partitions: map[string]bool{}}
	var err error
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		s.d = dialectPostgres
		s.db, err = sql.Open("pgx", url)
		if err == nil {
			s.db.SetMaxOpenConns(8)
		}
	case strings.HasPrefix(url, "sqlite:"):
		s.d = dialectSQLite
		file := strings.TrimPrefix(url, "sqlite:")
		if file == "" {
			return nil, errors.New("open store: sqlite: needs a file name (sqlite:FILE)")
		}
		if err := createPrivate(file); err != nil {
			return nil, err
		}
		// WAL with synchronous=FULL: a commit is on disk before the PUBACK.
		dsn := "file:" + file + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"
		s.db, err = sql.Open("sqlite", dsn)
		if err == nil {
			s.db.SetMaxOpenConns(4)
		}
	default:
		return nil, fmt.Errorf("open store: %q: want postgres://... or sqlite:FILE", redactURL(url))
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", redactURL(url), err)
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open store %s: %w", redactURL(url), err)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// createPrivate makes the SQLite file 0600 before the driver creates it.
func createPrivate(file string) error {
	if dir := filepath.Dir(file); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("open store: %w", err)
		}
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	return f.Close()
}

// redactURL hides a password in a database URL, for errors and logs.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	cred := u[scheme+3 : at]
	if user, _, ok := strings.Cut(cred, ":"); ok {
		return u[:scheme+3] + user + ":xxxxx" + u[at:]
	}
	return u
}

// Dialect is "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.d.String() }

// PostGIS reports whether positions have the geography column.
func (s *Store) PostGIS() bool { return s.postgis }

// DB is the underlying database, for tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database. Safe to call twice.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.db.Close() })
	return err
}

// WriteResult counts what one Write did.
type WriteResult struct {
	Inserted   int // rows new to positions, events and records
	Duplicates int // records that were already stored (redeliveries)
	Rejected   int
	// KeyChanges counts devices newly flagged: a state message or a
	// checkpoint with a key other than the enrolled one.
	KeyChanges int
	Flagged    []string // those devices, fleet/device
	// UnverifiedCheckpoints counts new checkpoints no trusted key verified.
	UnverifiedCheckpoints int
}

// retryable reports whether a transaction failed only because another one
// raced it (PostgreSQL deadlock or serialization failure, SQLite busy).
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40P01" || pe.Code == "40001" || pe.Code == "23505"
	}
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// dataError reports whether the database refused the data itself
// (PostgreSQL class 22, data exception): writing it again cannot succeed.
func dataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}

// Write stores a batch in one transaction: records idempotently on
// (fleet, device, boot, seq), the gaps they open or close, device state,
// reports and rejected messages. When it returns nil the batch is
// committed; otherwise nothing of it is.
func (s *Store) Write(ctx context.Context, b *Batch) (WriteResult, error) {
	if err := s.ensurePartitions(ctx, b); err != nil {
		return WriteResult{}, err
	}
	var res WriteResult
	var err error
	for attempt := 0; ; attempt++ {
		res, err = s.writeOnce(ctx, b)
		if err == nil || attempt >= 8 || !retryable(err) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
	}
	return res, err
}

func (s *Store) writeOnce(ctx context.Context, b *Batch) (WriteResult, error) {
	var res WriteResult
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("store write: begin: %w", err)
	}
	defer tx.Rollback()
	w := &batchWriter{s: s, tx: tx, now: time.Now().UTC()}
	if err := w.write(ctx, b, &res); err != nil {
		return WriteResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return WriteResult{}, fmt.Errorf("store write: commit: %w", err)
	}
	return res, nil
}

// partitionName names the month's positions partition.
func partitionName(t time.Time) string {
	return fmt.Sprintf("positions_y%04dm%02d", t.Year(), int(t.Month()))
}

// ensurePartitions creates (PostgreSQL) the monthly partitions that the
// batch's positions fall in, each once per process, before the write's
// transaction.
func (s *Store) ensurePartitions(ctx context.Context, b *Batch) error {
	if s.d != dialectPostgres {
		return nil
	}
	var need []time.Time
	s.mu.Lock()
	for i := range b.Rows {
		r := &b.Rows[i]
		if r.Record.Kind() != kestrel.KindPosition {
			continue
		}
		t := time.UnixMilli(r.Record.Time).UTC()
		m := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		if n := partitionName(m); !s.partitions[n] && !slices.Contains(need, m) {
			need = append(need, m)
		}
	}
	s.mu.Unlock()
	// A month is known only once its partition exists: a concurrent
	// Write of the same month creates it too (IF NOT EXISTS) rather than
	// inserting before it is there.
	for _, m := range need {
		if err := s.createPartition(ctx, m); err != nil {
			return err
		}
		s.mu.Lock()
		s.partitions[partitionName(m)] = true
		s.mu.Unlock()
	}
	return nil
}

// PreparePartitions creates (PostgreSQL) the monthly positions partitions
// from the month of from to the month of to. Write creates what a batch
// needs anyway; serve prepares this month and the next at start.
func (s *Store) PreparePartitions(ctx context.Context, from, to time.Time) error {
	if s.d != dialectPostgres {
		return nil
	}
	from, to = from.UTC(), to.UTC()
	for m := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC); !m.After(to); m = m.AddDate(0, 1, 0) {
		s.mu.Lock()
		known := s.partitions[partitionName(m)]
		s.mu.Unlock()
		if known {
			continue
		}
		if err := s.createPartition(ctx, m); err != nil {
			return err
		}
		s.mu.Lock()
		s.partitions[partitionName(m)] = true
		s.mu.Unlock()
	}
	return nil
}

func (s *Store) createPartition(ctx context.Context, month time.Time) error {
	next := month.AddDate(0, 1, 0)
	stmt := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF positions FOR VALUES FROM ('%s') TO ('%s')",
		partitionName(month), month.Format("2006-01-02 15:04:05Z07:00"), next.Format("2006-01-02 15:04:05Z07:00"))
	var err error
	for range 5 {
		// Two instances may race to create the same month: the loser's
		// IF NOT EXISTS can still fail on the catalog's unique index.
		if _, err = s.db.ExecContext(ctx, stmt); err == nil || !retryable(err) {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "42P07" {
				err = nil // created by a concurrent writer between its check and ours
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("store: create partition %s: %w", partitionName(month), err)
	}
	return nil
}
