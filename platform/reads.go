package platform

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TrackQuery selects one device's positions.
type TrackQuery struct {
	Fleet  string // empty: any fleet
	Device string
	From   time.Time // zero: from the first
	To     time.Time // zero: to the last; exclusive
	Limit  int       // 0: no limit
}

// TrackPoint is one stored position.
type TrackPoint struct {
	Fleet    string
	Record   kestrel.Record // Body is *kestrel.Position
	Received time.Time
}

// Track calls fn for each position of the query in time order (then boot,
// seq), streaming: a year of fixes never sits in memory.
func (s *Store) Track(ctx context.Context, q TrackQuery, fn func(*TrackPoint) error) error {
	if q.Device == "" {
		return fmt.Errorf("track: a device is required")
	}
	var where []string
	var args []any
	where = append(where, "device = ?")
	args = append(args, q.Device)
	if q.Fleet != "" {
		where = append(where, "fleet = ?")
		args = append(args, q.Fleet)
	}
	if !q.From.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, s.d.ts(q.From))
	}
	if !q.To.IsZero() {
		where = append(where, "time < ?")
		args = append(args, s.d.ts(q.To))
	}
	query := "SELECT fleet, device, boot, seq, time, lat, lon, alt, speed, track, mode, sats, hdop, priority, received, eph, epv, coarsened FROM positions WHERE " +
		strings.Join(where, " AND ") + " ORDER BY time, boot, seq"
	if q.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return fmt.Errorf("track: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tp TrackPoint
		var boot, seq, mode, coarsened int64
		var t, recv nullTime
		var lat, lon float64
		var alt, speed, track, hdop, eph, epv sql.NullFloat64
		var sats sql.NullInt64
		var prio string
		if err := rows.Scan(&tp.Fleet, &tp.Record.Device, &boot, &seq, &t, &lat, &lon, &alt, &speed, &track, &mode, &sats, &hdop, &prio, &recv, &eph, &epv, &coarsened); err != nil {
			return fmt.Errorf("track: %w", err)
		}
		p := &kestrel.Position{Lat: int32(math.Round(lat * 1e7)), Lon: int32(math.Round(lon * 1e7)), Mode: kestrel.FixMode(mode), Coarsened: uint32(coarsened)}
		if alt.Valid {
			p.Alt, p.Flags = int32(math.Round(alt.Float64*100)), p.Flags|kestrel.HasAlt
		}
		if speed.Valid {
			p.Speed, p.Flags = int32(math.Round(speed.Float64*100)), p.Flags|kestrel.HasSpeed
		}
		if track.Valid {
			p.Track, p.Flags = uint16(math.Round(track.Float64*100)), p.Flags|kestrel.HasTrack
		}
		if sats.Valid {
			p.Sats, p.Flags = uint8(sats.Int64), p.Flags|kestrel.HasSats
		}
		if hdop.Valid {
			p.HDOP, p.Flags = uint16(math.Round(hdop.Float64*100)), p.Flags|kestrel.HasHDOP
		}
		if eph.Valid {
			p.EPH, p.Flags = uint32(math.Round(eph.Float64*100)), p.Flags|kestrel.HasEPH
		}
		if epv.Valid {
			p.EPV, p.Flags = uint32(math.Round(epv.Float64*100)), p.Flags|kestrel.HasEPV
		}
		tp.Record.Boot, tp.Record.Seq, tp.Record.Time = uint32(boot), uint64(seq), t.Time.UnixMilli()
		tp.Record.Priority, _ = kestrel.ParsePriority(prio)
		tp.Record.Body = p
		tp.Received = recv.Time
		if err := fn(&tp); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("track: %w", err)
	}
	return nil
}

// Gap is one row of the gaps table.
type Gap struct {
	Fleet     string     `json:"fleet"`
	Device    string     `json:"device"`
	Boot      uint32     `json:"boot"`
	FirstSeq  uint64     `json:"first_seq"`
	LastSeq   uint64     `json:"last_seq"`
	Opened    time.Time  `json:"opened"`
	Closed    *time.Time `json:"closed"`
	Missing   uint64     `json:"missing"` // records in the range (open gaps)
	Remaining bool       `json:"open"`
}

// GapQuery selects gaps.
type GapQuery struct {
	Fleet  string // empty: every fleet
	Device string // empty: every device
	All    bool   // closed gaps too
}

// Gaps lists gaps, open ones only unless q.All.
func (s *Store) Gaps(ctx context.Context, q GapQuery) ([]Gap, error) {
	where := []string{"1 = 1"}
	var args []any
	if q.Fleet != "" {
		where, args = append(where, "fleet = ?"), append(args, q.Fleet)
	}
	if q.Device != "" {
		where, args = append(where, "device = ?"), append(args, q.Device)
	}
	if !q.All {
		where = append(where, "closed IS NULL")
	}
	rows, err := s.db.QueryContext(ctx, s.d.q("SELECT fleet, device, boot, first_seq, last_seq, opened, closed FROM gaps WHERE "+
		strings.Join(where, " AND ")+" ORDER BY fleet, device, boot, first_seq, id"), args...)
	if err != nil {
		return nil, fmt.Errorf("gaps: %w", err)
	}
	defer rows.Close()
	var out []Gap
	for rows.Next() {
		var g Gap
		var boot, first, last int64
		var opened, closed nullTime
		if err := rows.Scan(&g.Fleet, &g.Device, &boot, &first, &last, &opened, &closed); err != nil {
			return nil, fmt.Errorf("gaps: %w", err)
		}
		g.Boot, g.FirstSeq, g.LastSeq, g.Opened = uint32(boot), uint64(first), uint64(last), opened.Time
		if closed.Valid {
			c := closed.Time
			g.Closed = &c
		} else {
			g.Remaining = true
			g.Missing = g.LastSeq - g.FirstSeq + 1
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// Device is one row of the devices table.
type Device struct {
	Fleet       string     `json:"fleet"`
	Device      string     `json:"device"`
	Online      *bool      `json:"online"`
	Boot        *uint32    `json:"boot"`
	LastSeen    *time.Time `json:"last_seen"`
	LastFixTime *time.Time `json:"last_fix_time"`
	LastLat     *float64   `json:"last_lat"`
	LastLon     *float64   `json:"last_lon"`
	Version     string     `json:"version"`
	State       string     `json:"-"`        // JSON of the last state message
	Messages    int64      `json:"messages"` // data messages received, redeliveries included
	Bytes       int64      `json:"bytes"`    // their payload bytes
	OpenGaps    int        `json:"open_gaps"`
	Missing     uint64     `json:"missing"`
	// KeyStatus is the device key against its enrolment (docs/evidence.md):
	// unenrolled, enrolled, or changed (flagged, not trusted until
	// re-enrolled, from KeyChangedSeq).
	KeyStatus     string  `json:"key_status,omitempty"`
	KeyChangedSeq *uint64 `json:"key_changed_seq,omitempty"`
	DeviceStatus
}

// Devices lists the devices of a fleet (empty: every fleet) with their
// open gaps.
func (s *Store) Devices(ctx context.Context, fleet string) ([]Device, error) {
	where, args := "", []any(nil)
	if fleet != "" {
		where, args = " WHERE d.fleet = ?", []any{fleet}
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT d.fleet, d.device, d.online, d.boot, d.last_seen, d.last_fix_time, d.last_lat, d.last_lon, d.version, d.state, d.messages, d.bytes,
	d.battery_percent, d.battery_status, d.ignition, d.radio_profile, d.radio_registered, d.radio_act, d.radio_rssi,
	d.spool_records, d.spool_bytes, d.spool_oldest_s, d.privacy_mode, d.key_status, d.key_changed_seq,
	(SELECT count(*) FROM gaps g WHERE g.fleet = d.fleet AND g.device = d.device AND g.closed IS NULL),
	(SELECT coalesce(sum(g.last_seq - g.first_seq + 1), 0) FROM gaps g WHERE g.fleet = d.fleet AND g.device = d.device AND g.closed IS NULL)
FROM devices d`+where+" ORDER BY d.fleet, d.device"), args...)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		var online sql.NullBool
		var boot sql.NullInt64
		var seen, fix nullTime
		var lat, lon sql.NullFloat64
		var version, state sql.NullString
		var missing int64
		var keyStatus sql.NullString
		var keySeq sql.NullInt64
		if err := rows.Scan(&d.Fleet, &d.Device, &online, &boot, &seen, &fix, &lat, &lon, &version, &state, &d.Messages, &d.Bytes,
			&d.BatteryPercent, &d.BatteryStatus, &d.Ignition, &d.RadioProfile, &d.RadioRegistered, &d.RadioAct, &d.RadioRSSI,
			&d.SpoolRecords, &d.SpoolBytes, &d.SpoolOldestS, &d.PrivacyMode, &keyStatus, &keySeq, &d.OpenGaps, &missing); err != nil {
			return nil, fmt.Errorf("devices: %w", err)
		}
		d.KeyStatus = keyStatus.String
		if keySeq.Valid {
			u := uint64(keySeq.Int64)
			d.KeyChangedSeq = &u
		}
		if online.Valid {
			d.Online = &online.Bool
		}
		if boot.Valid {
			b := uint32(boot.Int64)
			d.Boot = &b
		}
		if seen.Valid {
			d.LastSeen = &seen.Time
		}
		if fix.Valid {
			d.LastFixTime = &fix.Time
		}
		if lat.Valid && lon.Valid {
			d.LastLat, d.LastLon = &lat.Float64, &lon.Float64
		}
		d.Version, d.State, d.Missing = version.String, state.String, uint64(missing)
		out = append(out, d)
	}
	return out, rows.Err()
}

// Counts is how many rows each record table holds.
type Counts struct {
	Positions, Events, Records, Rejected, OpenGaps int
}

// Total is the records stored, of every kind.
func (c Counts) Total() int { return c.Positions + c.Events + c.Records }

// Count counts rows, for summaries and tests.
func (s *Store) Count(ctx context.Context, fleet string) (Counts, error) {
	var c Counts
	where, args := "", []any(nil)
	if fleet != "" {
		where, args = " WHERE fleet = ?", []any{fleet}
	}
	for _, t := range []struct {
		table string
		dst   *int
		extra string
	}{{"positions", &c.Positions, ""}, {"events", &c.Events, ""}, {"records", &c.Records, ""}, {"gaps", &c.OpenGaps, "closed IS NULL"}} {
		w := where
		if t.extra != "" {
			if w == "" {
				w = " WHERE " + t.extra
			} else {
				w += " AND " + t.extra
			}
		}
		if err := s.db.QueryRowContext(ctx, s.d.q("SELECT count(*) FROM "+t.table+w), args...).Scan(t.dst); err != nil {
			return c, fmt.Errorf("count %s: %w", t.table, err)
		}
	}
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM rejected").Scan(&c.Rejected); err != nil {
		return c, fmt.Errorf("count rejected: %w", err)
	}
	return c, nil
}

// Keys calls fn for every stored record key (positions, events and other
// kinds) of a fleet: for tests and audits that compare against what devices
// sent.
func (s *Store) Keys(ctx context.Context, fleet string, fn func(device string, boot uint32, seq uint64)) error {
	for _, table := range []string{"positions", "events", "records"} {
		rows, err := s.db.QueryContext(ctx, s.d.q("SELECT device, boot, seq FROM "+table+" WHERE fleet = ?"), fleet)
		if err != nil {
			return fmt.Errorf("keys %s: %w", table, err)
		}
		for rows.Next() {
			var dev string
			var boot, seq int64
			if err := rows.Scan(&dev, &boot, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("keys %s: %w", table, err)
			}
			fn(dev, uint32(boot), uint64(seq))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}
