package platform

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

func nowUTC() time.Time { return time.Now().UTC() }

// maxRowsPerStatement keeps a multi-row statement under SQLite's 32766
// parameters (and PostgreSQL's 65535) at 18 columns.
const maxRowsPerStatement = 500

// runKey is one device's boot: what a seq range and its gaps belong to.
type runKey struct {
	fleet, device string
	boot          int64
}

func compareRunKey(a, b runKey) int {
	if c := strings.Compare(a.fleet, b.fleet); c != 0 {
		return c
	}
	if c := strings.Compare(a.device, b.device); c != 0 {
		return c
	}
	return cmp.Compare(a.boot, b.boot)
}

type batchWriter struct {
	s   *Store
	tx  *sql.Tx
	now time.Time
}

func (w *batchWriter) exec(ctx context.Context, what, query string, args ...any) (int64, error) {
	r, err := w.tx.ExecContext(ctx, w.s.d.q(query), args...)
	if err != nil {
		return 0, fmt.Errorf("store write %s: %w", what, err)
	}
	n, _ := r.RowsAffected()
	return n, nil
}

// insertRows runs "INSERT INTO table (cols) VALUES (...), ... suffix" over
// n rows in chunks, row(i) giving row i's values.
func (w *batchWriter) insertRows(ctx context.Context, what, head, suffix string, ncol, n int, row func(i int, args []any) []any) (int64, error) {
	var total int64
	ph := "(" + strings.TrimSuffix(strings.Repeat("?,", ncol), ",") + ")"
	for start := 0; start < n; start += maxRowsPerStatement {
		end := min(n, start+maxRowsPerStatement)
		var q strings.Builder
		q.WriteString(head)
		q.WriteString(" VALUES ")
		args := make([]any, 0, (end-start)*ncol)
		for i := start; i < end; i++ {
			if i > start {
				q.WriteByte(',')
			}
			q.WriteString(ph)
			args = row(i, args)
		}
		q.WriteString(suffix)
		k, err := w.exec(ctx, what, q.String(), args...)
		if err != nil {
			return total, err
		}
		total += k
	}
	return total, nil
}

func (w *batchWriter) write(ctx context.Context, b *Batch, res *WriteResult) error {
	// Records by device and boot, in key order: every transaction locks
	// seq_ranges rows in the same order, so two instances writing the
	// same devices wait for each other instead of deadlocking.
	runs := map[runKey][]int64{}
	var pos, evs, others []*Row
	for i := range b.Rows {
		r := &b.Rows[i]
		k := runKey{r.Fleet, r.Record.Device, int64(r.Record.Boot)}
		runs[k] = append(runs[k], int64(r.Record.Seq))
		switch r.Record.Kind() {
		case kestrel.KindPosition:
			pos = append(pos, r)
		case kestrel.KindEvent:
			evs = append(evs, r)
		default:
			others = append(others, r)
		}
	}
	keys := make([]runKey, 0, len(runs))
	for k := range runs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareRunKey)
	ranges, open, err := w.lockRuns(ctx, keys)
	if err != nil {
		return err
	}
	n, err := w.insertRecords(ctx, pos, evs, others)
	if err != nil {
		return err
	}
	res.Inserted = int(n)
	res.Duplicates = len(b.Rows) - int(n)
	if err := w.updateGaps(ctx, keys, runs, ranges, open); err != nil {
		return err
	}
	if err := w.updateDevices(ctx, b); err != nil {
		return err
	}
	if err := w.checkKeys(ctx, b, others, res); err != nil {
		return err
	}
	if len(b.Reports) > 0 {
		if _, err := w.insertRows(ctx, "reports", "INSERT INTO reports (fleet, device, channel, digest, payload, received)",
			" ON CONFLICT DO NOTHING", 6, len(b.Reports), func(i int, a []any) []any {
				r := &b.Reports[i]
				return append(a, r.Fleet, r.Device, r.Channel, digest(r.Payload), r.Payload, w.s.d.ts(r.Received))
			}); err != nil {
			return err
		}
		if err := w.writeAudit(ctx, b.Reports); err != nil {
			return err
		}
	}
	if err := w.insertUpdates(ctx, b.Updates); err != nil {
		return err
	}
	if len(b.Rejected) > 0 {
		if _, err := w.insertRows(ctx, "rejected", "INSERT INTO rejected (topic, payload, error, received)", "", 4, len(b.Rejected),
			func(i int, a []any) []any {
				r := &b.Rejected[i]
				return append(a, r.Topic, r.Payload, r.Err, w.s.d.ts(r.Received))
			}); err != nil {
			return err
		}
		res.Rejected = len(b.Rejected)
	}
	return nil
}

// lockRuns makes sure every run has a seq_ranges row, locks them in key
// order and loads the runs' open gaps.
func (w *batchWriter) lockRuns(ctx context.Context, keys []runKey) (map[runKey]seqRange, map[runKey][]gapRow, error) {
	ranges := make(map[runKey]seqRange, len(keys))
	open := map[runKey][]gapRow{}
	if len(keys) == 0 {
		return ranges, open, nil
	}
	// An empty range (min 0, max -1) until a record lands in it.
	if _, err := w.insertRows(ctx, "seq_ranges", "INSERT INTO seq_ranges (fleet, device, boot, min_seq, max_seq)",
		" ON CONFLICT DO NOTHING", 5, len(keys), func(i int, a []any) []any {
			return append(a, keys[i].fleet, keys[i].device, keys[i].boot, 0, -1)
		}); err != nil {
		return nil, nil, err
	}
	for start := 0; start < len(keys); start += maxRowsPerStatement {
		chunk := keys[start:min(len(keys), start+maxRowsPerStatement)]
		in, args := keyList(chunk)
		rows, err := w.tx.QueryContext(ctx, w.s.d.q("SELECT fleet, device, boot, min_seq, max_seq FROM seq_ranges WHERE (fleet, device, boot) IN ("+in+") ORDER BY fleet, device, boot"+w.s.d.forUpdate()), args...)
		if err != nil {
			return nil, nil, fmt.Errorf("store write: lock seq_ranges: %w", err)
		}
		for rows.Next() {
			var k runKey
			var r seqRange
			if err := rows.Scan(&k.fleet, &k.device, &k.boot, &r.min, &r.max); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("store write: seq_ranges: %w", err)
			}
			r.exists = r.max >= r.min
			ranges[k] = r
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("store write: seq_ranges: %w", err)
		}
		rows, err = w.tx.QueryContext(ctx, w.s.d.q("SELECT id, fleet, device, boot, first_seq, last_seq, opened FROM gaps WHERE closed IS NULL AND (fleet, device, boot) IN ("+in+")"), args...)
		if err != nil {
			return nil, nil, fmt.Errorf("store write: open gaps: %w", err)
		}
		for rows.Next() {
			var k runKey
			var g gapRow
			var opened nullTime
			if err := rows.Scan(&g.id, &k.fleet, &k.device, &k.boot, &g.first, &g.last, &opened); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("store write: open gaps: %w", err)
			}
			g.opened = opened.Time
			open[k] = append(open[k], g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("store write: open gaps: %w", err)
		}
	}
	return ranges, open, nil
}

// keyList is "(?,?,?),..." for a row-value IN over run keys.
func keyList(keys []runKey) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, 3*len(keys))
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(CAST(? AS text), CAST(? AS text), CAST(? AS bigint))")
		args = append(args, k.fleet, k.device, k.boot)
	}
	return b.String(), args
}

func (w *batchWriter) insertRecords(ctx context.Context, pos, evs, others []*Row) (int64, error) {
	d := w.s.d
	var total int64
	n, err := w.insertRows(ctx, "positions",
		"INSERT INTO positions (fleet, device, boot, seq, time, lat, lon, alt, speed, track, mode, sats, hdop, priority, received, eph, epv, coarsened, flags)",
		" ON CONFLICT DO NOTHING", 19, len(pos), func(i int, a []any) []any {
			r := pos[i]
			p := r.Record.Body.(*kestrel.Position)
			f := p.Flags
			return append(a, r.Fleet, r.Record.Device, int64(r.Record.Boot), int64(r.Record.Seq), d.tsMS(r.Record.Time),
				float64(p.Lat)/1e7, float64(p.Lon)/1e7,
				nullable{float64(p.Alt) / 100, f&kestrel.HasAlt != 0},
				nullable{float64(p.Speed) / 100, f&kestrel.HasSpeed != 0},
				nullable{float64(p.Track) / 100, f&kestrel.HasTrack != 0},
				int64(p.Mode),
				nullable{int64(p.Sats), f&kestrel.HasSats != 0},
				nullable{float64(p.HDOP) / 100, f&kestrel.HasHDOP != 0},
				r.Record.Priority.String(), d.ts(r.Received),
				nullable{float64(p.EPH) / 100, f&kestrel.HasEPH != 0},
				nullable{float64(p.EPV) / 100, f&kestrel.HasEPV != 0},
				int64(p.Coarsened), int64(f))
		})
	if err != nil {
		return 0, err
	}
	total += n
	n, err = w.insertRows(ctx, "events",
		"INSERT INTO events (fleet, device, boot, seq, time, type, source, name, value, text, priority, received)",
		" ON CONFLICT DO NOTHING", 12, len(evs), func(i int, a []any) []any {
			r := evs[i]
			e := r.Record.Body.(*kestrel.Event)
			return append(a, r.Fleet, r.Record.Device, int64(r.Record.Boot), int64(r.Record.Seq), d.tsMS(r.Record.Time),
				e.Type.String(), e.Source, e.Name, e.Value, e.Text, r.Record.Priority.String(), d.ts(r.Received))
		})
	if err != nil {
		return 0, err
	}
	total += n
	var js []byte
	n, err = w.insertRows(ctx, "records",
		"INSERT INTO records (fleet, device, boot, seq, time, kind, priority, body, received, record_wire)",
		" ON CONFLICT DO NOTHING", 10, len(others), func(i int, a []any) []any {
			r := others[i]
			js = wire.AppendJSON(js[:0], &r.Record)
			// The record as sent: its JSON body is not lossless for
			// every kind (docs/evidence.md, "On the platform").
			raw, _ := wire.AppendRecord(nil, &r.Record)
			return append(a, r.Fleet, r.Record.Device, int64(r.Record.Boot), int64(r.Record.Seq), d.tsMS(r.Record.Time),
				r.Record.Kind().String(), r.Record.Priority.String(), string(js), d.ts(r.Received), raw)
		})
	if err != nil {
		return 0, err
	}
	return total + n, nil
}

func (w *batchWriter) updateGaps(ctx context.Context, keys []runKey, runs map[runKey][]int64, ranges map[runKey]seqRange, open map[runKey][]gapRow) error {
	type newGap struct {
		k runKey
		g gapRow
	}
	var changedKeys []runKey
	var changedRanges []seqRange
	var closed []int64
	var inserted []newGap
	for _, k := range keys {
		seqs := runs[k]
		slices.Sort(seqs)
		before := ranges[k]
		after, ch := applySeqs(before, open[k], seqs, w.now)
		if after != before {
			changedKeys = append(changedKeys, k)
			changedRanges = append(changedRanges, after)
		}
		closed = append(closed, ch.closed...)
		for _, g := range ch.updated {
			if _, err := w.exec(ctx, "gaps", "UPDATE gaps SET first_seq = ?, last_seq = ? WHERE id = ?", g.first, g.last, g.id); err != nil {
				return err
			}
		}
		for _, g := range ch.inserted {
			inserted = append(inserted, newGap{k, g})
		}
	}
	if len(changedKeys) > 0 {
		if _, err := w.insertRows(ctx, "seq_ranges", "INSERT INTO seq_ranges (fleet, device, boot, min_seq, max_seq)",
			" ON CONFLICT (fleet, device, boot) DO UPDATE SET min_seq = excluded.min_seq, max_seq = excluded.max_seq",
			5, len(changedKeys), func(i int, a []any) []any {
				k, r := changedKeys[i], changedRanges[i]
				return append(a, k.fleet, k.device, k.boot, r.min, r.max)
			}); err != nil {
			return err
		}
	}
	for start := 0; start < len(closed); start += maxRowsPerStatement {
		ids := closed[start:min(len(closed), start+maxRowsPerStatement)]
		args := []any{w.s.d.ts(w.now)}
		for _, id := range ids {
			args = append(args, id)
		}
		if _, err := w.exec(ctx, "gaps", "UPDATE gaps SET closed = ? WHERE id IN ("+strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")+")", args...); err != nil {
			return err
		}
	}
	if len(inserted) > 0 {
		if _, err := w.insertRows(ctx, "gaps", "INSERT INTO gaps (fleet, device, boot, first_seq, last_seq, opened)", "", 6, len(inserted),
			func(i int, a []any) []any {
				g := inserted[i]
				return append(a, g.k.fleet, g.k.device, g.k.boot, g.g.first, g.g.last, w.s.d.ts(g.g.opened))
			}); err != nil {
			return err
		}
	}
	return nil
}

// deviceSeen is what a batch says about one device.
type deviceSeen struct {
	fleet, device string
	boot          int64
	lastSeen      time.Time
	fixTime       int64 // ms; 0: no position
	lat, lon      float64
}

func (w *batchWriter) updateDevices(ctx context.Context, b *Batch) error {
	d := w.s.d
	seen := map[[2]string]*deviceSeen{}
	for i := range b.Rows {
		r := &b.Rows[i]
		k := [2]string{r.Fleet, r.Record.Device}
		ds := seen[k]
		if ds == nil {
			ds = &deviceSeen{fleet: r.Fleet, device: r.Record.Device}
			seen[k] = ds
		}
		ds.boot = max(ds.boot, int64(r.Record.Boot))
		if r.Received.After(ds.lastSeen) {
			ds.lastSeen = r.Received
		}
		if p, ok := r.Record.Body.(*kestrel.Position); ok && r.Record.Time > ds.fixTime {
			ds.fixTime, ds.lat, ds.lon = r.Record.Time, float64(p.Lat)/1e7, float64(p.Lon)/1e7
		}
	}
	list := make([]*deviceSeen, 0, len(seen))
	for _, ds := range seen {
		list = append(list, ds)
	}
	slices.SortFunc(list, func(a, b *deviceSeen) int {
		return cmp.Or(strings.Compare(a.fleet, b.fleet), strings.Compare(a.device, b.device))
	})
	if len(list) > 0 {
		if _, err := w.insertRows(ctx, "devices", "INSERT INTO devices (fleet, device, boot, last_seen, last_fix_time, last_lat, last_lon, messages, bytes)",
			` ON CONFLICT (fleet, device) DO UPDATE SET
	messages = devices.messages + excluded.messages, bytes = devices.bytes + excluded.bytes,
	boot = CASE WHEN devices.boot IS NULL OR excluded.boot > devices.boot THEN excluded.boot ELSE devices.boot END,
	last_seen = CASE WHEN devices.last_seen IS NULL OR excluded.last_seen > devices.last_seen THEN excluded.last_seen ELSE devices.last_seen END,
	last_lat = CASE WHEN excluded.last_fix_time IS NOT NULL AND (devices.last_fix_time IS NULL OR excluded.last_fix_time > devices.last_fix_time) THEN excluded.last_lat ELSE devices.last_lat END,
	last_lon = CASE WHEN excluded.last_fix_time IS NOT NULL AND (devices.last_fix_time IS NULL OR excluded.last_fix_time > devices.last_fix_time) THEN excluded.last_lon ELSE devices.last_lon END,
	last_fix_time = CASE WHEN excluded.last_fix_time IS NOT NULL AND (devices.last_fix_time IS NULL OR excluded.last_fix_time > devices.last_fix_time) THEN excluded.last_fix_time ELSE devices.last_fix_time END`,
			9, len(list), func(i int, a []any) []any {
				ds := list[i]
				tr := b.Traffic[[2]string{ds.fleet, ds.device}]
				fix := nullable{d.tsMS(ds.fixTime), ds.fixTime != 0}
				lat := nullable{ds.lat, ds.fixTime != 0}
				lon := nullable{ds.lon, ds.fixTime != 0}
				return append(a, ds.fleet, ds.device, ds.boot, d.ts(ds.lastSeen), fix, lat, lon, tr.Messages, tr.Bytes)
			}); err != nil {
			return err
		}
	}
	states := slices.Clone(b.States)
	slices.SortStableFunc(states, func(a, b State) int {
		return cmp.Or(strings.Compare(a.Fleet, b.Fleet), strings.Compare(a.Device, b.Device))
	})
	for _, st := range states {
		// A state message (retained, so it comes again on every
		// subscribe) replaces the stored one only if it is not older.
		// The device list's columns keep their last reported value when
		// a message (a Last Will) does not carry them.
		if _, err := w.exec(ctx, "devices", stateUpsert,
			append([]any{st.Fleet, st.Device, st.Online, int64(st.Boot), d.ts(st.Received), st.Version, st.JSON, st.Time}, st.Status.args()...)...); err != nil {
			return err
		}
	}
	return nil
}

// stateUpsert writes a state message into its devices row.
var stateUpsert = func() string {
	var cols, marks, sets strings.Builder
	for _, c := range statusColumns {
		cols.WriteString(", " + c)
		marks.WriteString(", ?")
		sets.WriteString(",\n\t" + c + " = coalesce(excluded." + c + ", devices." + c + ")")
	}
	return `INSERT INTO devices (fleet, device, online, boot, last_seen, version, state, state_time` + cols.String() + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?` + marks.String() + `)
ON CONFLICT (fleet, device) DO UPDATE SET online = excluded.online,
	boot = CASE WHEN devices.boot IS NULL OR excluded.boot > devices.boot THEN excluded.boot ELSE devices.boot END,
	version = excluded.version, state = excluded.state, state_time = excluded.state_time,
	last_seen = CASE WHEN devices.last_seen IS NULL OR excluded.last_seen > devices.last_seen THEN excluded.last_seen ELSE devices.last_seen END` + sets.String() + `
WHERE devices.state_time IS NULL OR excluded.state_time >= devices.state_time`
}()
