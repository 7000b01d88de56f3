package platform

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// ChannelUpdateReported is the device's OTA update report (retained JSON,
// transport/fleet.UpdateReport), stored in the updates table with its
// history.
const ChannelUpdateReported = fleet.ChannelUpdateReported

// Update is one update/reported message, decoded.
type Update struct {
	Fleet, Device  string
	Seq            uint64
	Version        string
	State          string
	Have, Size     int64
	Delta          bool
	Reason         string
	RunningSeq     uint64
	RunningVersion string
	Time           int64  // the device's time of the report, ms
	KeyID          string // the device key that sealed it; empty if bare
	Payload        string // the message as received
	Received       time.Time
}

var updateState = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)

// decodeUpdate checks an update report: it must name the device and fleet
// of its topic, and fit the store.
func decodeUpdate(fleetID, device string, m Message) (Update, error) {
	r, err := fleet.DecodeUpdateReport(m.Payload)
	if err != nil {
		return Update{}, fmt.Errorf("%s: %w", m.Topic, err)
	}
	switch {
	case r.Device != device || r.Fleet != fleetID:
		return Update{}, fmt.Errorf("%s: report names device %q of fleet %q, not the topic's", m.Topic, r.Device, r.Fleet)
	case !updateState.MatchString(r.State):
		return Update{}, fmt.Errorf("%s: state %q: want a lower-case word such as %s", m.Topic, r.State, fleet.UpdateGood)
	case r.Seq > math.MaxInt64 || r.Running > math.MaxInt64:
		return Update{}, fmt.Errorf("%s: seq does not fit the store's 63 bits", m.Topic)
	case r.Have < 0 || r.Size < 0:
		return Update{}, fmt.Errorf("%s: negative byte count", m.Topic)
	case r.Time < minTime || r.Time > maxTime:
		return Update{}, fmt.Errorf("%s: time %d ms is outside years 1-9999", m.Topic, r.Time)
	case len(r.Version) > 256 || len(r.RunningVersion) > 256 || len(r.Reason) > 4096:
		return Update{}, fmt.Errorf("%s: version or reason too long", m.Topic)
	case !storableText(m.Payload):
		return Update{}, fmt.Errorf("%s: payload is not JSON in valid UTF-8 without NUL", m.Topic)
	}
	u := Update{Fleet: fleetID, Device: device, Seq: r.Seq, Version: r.Version, State: r.State, Have: r.Have, Size: r.Size,
		Delta: r.Delta, Reason: r.Reason, RunningSeq: r.Running, RunningVersion: r.RunningVersion, Time: r.Time,
		Payload: string(m.Payload), Received: m.Received}
	if r.Signature != nil {
		u.KeyID = r.Signature.KeyID
	}
	return u, nil
}

// insertUpdates keeps each distinct report once (a retained report sent
// again on every reconnect is the same row).
func (w *batchWriter) insertUpdates(ctx context.Context, us []Update) error {
	if len(us) == 0 {
		return nil
	}
	_, err := w.insertRows(ctx, "updates", "INSERT INTO updates (fleet, device, seq, version, state, have, size, delta, reason, running_seq, running_version, time, kid, digest, payload, received)",
		" ON CONFLICT DO NOTHING", 16, len(us), func(i int, a []any) []any {
			u := &us[i]
			return append(a, u.Fleet, u.Device, int64(u.Seq), u.Version, u.State, u.Have, u.Size, u.Delta, u.Reason,
				int64(u.RunningSeq), u.RunningVersion, w.s.d.tsMS(u.Time), u.KeyID, digest(u.Payload), u.Payload, w.s.d.ts(u.Received))
		})
	return err
}

// UpdateQuery selects update reports.
type UpdateQuery struct {
	Fleet   string // required
	Device  string // empty: every device
	History bool   // every report, oldest first; otherwise each device's latest
	Limit   int    // 0: no limit
}

// UpdateRow is one stored update report, with the device key the device's
// last state message announces (to check Payload's seal against).
type UpdateRow struct {
	Update
	DeviceKey string
}

// Updates reads update reports: each device's latest (by the device's
// time, then arrival order: reports of one millisecond keep the order the
// device sent them in, MQTT keeping a topic's order), or with History
// every report.
func (s *Store) Updates(ctx context.Context, q UpdateQuery) ([]UpdateRow, error) {
	if q.Fleet == "" {
		return nil, fmt.Errorf("updates: a fleet is required")
	}
	where := []string{"u.fleet = ?"}
	args := []any{q.Fleet}
	if q.Device != "" {
		where = append(where, "u.device = ?")
		args = append(args, q.Device)
	}
	if !q.History {
		where = append(where, `NOT EXISTS (SELECT 1 FROM updates n WHERE n.fleet = u.fleet AND n.device = u.device
	AND (n.time > u.time OR n.time = u.time AND n.id > u.id))`)
	}
	query := `SELECT u.fleet, u.device, u.seq, u.version, u.state, u.have, u.size, u.delta, u.reason, u.running_seq, u.running_version,
	u.time, u.kid, u.payload, u.received, d.state
FROM updates u LEFT JOIN devices d ON d.fleet = u.fleet AND d.device = u.device
WHERE ` + strings.Join(where, " AND ") + " ORDER BY u.device, u.time, u.id"
	if q.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	defer rows.Close()
	var out []UpdateRow
	for rows.Next() {
		var u UpdateRow
		var seq, running int64
		var t, recv nullTime
		var state sql.NullString
		if err := rows.Scan(&u.Fleet, &u.Device, &seq, &u.Version, &u.State, &u.Have, &u.Size, &u.Delta, &u.Reason, &running,
			&u.RunningVersion, &t, &u.KeyID, &u.Payload, &recv, &state); err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
		u.Seq, u.RunningSeq, u.Time, u.Received = uint64(seq), uint64(running), t.Time.UnixMilli(), recv.Time
		if state.Valid {
			var st struct {
				Key string `json:"device_key"`
			}
			if json.Unmarshal([]byte(state.String), &st) == nil {
				u.DeviceKey = st.Key
			}
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
