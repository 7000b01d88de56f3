package web

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/platform"
)

// emergencyKey names one emergency event.
type emergencyKey struct {
	Fleet  string `json:"fleet"`
	Device string `json:"device"`
	Boot   uint32 `json:"boot"`
	Seq    uint64 `json:"seq"`
}

// Emergency is an emergency event not yet acknowledged.
type Emergency struct {
	emergencyKey
	Time time.Time `json:"time"`
	Name string    `json:"name"`
	Text string    `json:"text"`
	Lat  *float64  `json:"lat"`
	Lon  *float64  `json:"lon"`
}

// asTime reads a time column of either store (SQLite text, PostgreSQL timestamptz).
func asTime(v any) time.Time {
	switch t := v.(type) {
	case time.Time:
		return t.UTC()
	case string:
		p, _ := time.Parse(time.RFC3339Nano, t)
		return p
	case []byte:
		p, _ := time.Parse(time.RFC3339Nano, string(t))
		return p
	}
	return time.Time{}
}

// emergencies lists the unacknowledged emergency events of the last day,
// newest first, with each device's last known position.
func (s *Server) emergencies(ctx context.Context) ([]Emergency, error) {
	rows, err := s.store.DB().QueryContext(ctx, s.audit.q(`SELECT e.fleet, e.device, e.boot, e.seq, e.time, e.name, e.text, d.last_lat, d.last_lon
FROM events e LEFT JOIN devices d ON d.fleet = e.fleet AND d.device = e.device
WHERE e.type = 'emergency' AND e.time >= ?
AND NOT EXISTS (SELECT 1 FROM web_acks a WHERE a.fleet = e.fleet AND a.device = e.device AND a.boot = e.boot AND a.seq = e.seq)
ORDER BY e.time DESC LIMIT 100`), s.since(time.Now().Add(-24*time.Hour)))
	if err != nil {
		return nil, fmt.Errorf("emergencies: %w", err)
	}
	defer rows.Close()
	out := []Emergency{}
	for rows.Next() {
		var e Emergency
		var boot, seq int64
		var t any
		if err := rows.Scan(&e.Fleet, &e.Device, &boot, &seq, &t, &e.Name, &e.Text, &e.Lat, &e.Lon); err != nil {
			return nil, fmt.Errorf("emergencies: %w", err)
		}
		e.Boot, e.Seq, e.Time = uint32(boot), uint64(seq), asTime(t)
		out = append(out, e)
	}
	return out, rows.Err()
}

// since is a time argument in the store's dialect.
func (s *Server) since(t time.Time) any {
	if s.audit.postgres {
		return t.UTC()
	}
	return stamp(t)
}

// hub polls the store and fans changes out to the open event streams:
// devices whose row changed since the last poll, and the emergency list
// whenever it changes.
type hub struct {
	mu      sync.Mutex
	clients map[*client]struct{}
	last    map[[2]string]string // device -> fingerprint of its row
	emerg   string               // JSON of the emergency list last sent
}

// client is one open event stream. Device frames queue in order; the
// emergency list has its own slot, which the stream writes before any
// queued device frame and which a newer list replaces, so an emergency
// never waits behind a backlog of position updates and is never dropped.
type client struct {
	frames chan []byte
	urgent chan []byte // cap 1: the newest emergency list not yet written
}

var keepaliveFrame = []byte(": keepalive\n\n")

// next waits for the frame to write: the emergency list before any queued
// device frame, a keepalive comment on tick, nil when done is closed.
func (c *client) next(done <-chan struct{}, tick <-chan time.Time) []byte {
	select {
	case f := <-c.urgent:
		return f
	default:
	}
	select {
	case <-done:
		return nil
	case f := <-c.urgent:
		return f
	case f := <-c.frames:
		return f
	case <-tick:
		return keepaliveFrame
	}
}

func (h *hub) subscribe() *client {
	c := &client{frames: make(chan []byte, 64), urgent: make(chan []byte, 1)}
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

func sseFrame(event string, data []byte) []byte {
	return []byte("event: " + event + "\ndata: " + string(data) + "\n\n")
}

var resyncFrame = sseFrame("resync", []byte("{}"))

// publish queues a device frame for every client; a client too slow to
// keep up loses the frame and is told to reload.
func (h *hub) publish(event string, data []byte) {
	frame := sseFrame(event, data)
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.frames <- frame:
		default:
			select {
			case c.frames <- resyncFrame:
			default:
			}
		}
	}
}

// publishUrgent puts the emergency list in every client's slot, replacing
// one not yet written. Only publishUrgent sends on the slots (under h.mu),
// so after the drain the send has room.
func (h *hub) publishUrgent(event string, data []byte) {
	frame := sseFrame(event, data)
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case <-c.urgent:
		default:
		}
		c.urgent <- frame
	}
}

func fingerprint(d *platform.Device) string {
	b, _ := json.Marshal(d)
	return string(b) + d.State
}

// Commits wakes the dashboard when ingest commits, so that a new fix or
// an emergency is read at once rather than at the next poll. Set
// platform.IngestOptions.OnCommit to its OnCommit.
type Commits struct {
	devices   chan struct{} // any commit
	emergency chan struct{} // a commit that stored an emergency event
}

// NewCommits makes a Commits.
func NewCommits() *Commits {
	return &Commits{devices: make(chan struct{}, 1), emergency: make(chan struct{}, 1)}
}

// OnCommit is a platform.IngestOptions.OnCommit; it never blocks.
func (c *Commits) OnCommit(rows []platform.Row, _ time.Time) {
	for i := range rows {
		if ev, ok := rows[i].Record.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
			wake(c.emergency)
			break
		}
	}
	wake(c.devices)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// minPoll is the shortest time between two reads of the devices table.
const minPoll = 200 * time.Millisecond

// run polls until ctx ends, emergencies and devices each in its own
// goroutine so that a read of 5,000 device rows never holds up the
// emergency list: emergencies every EmergencyPoll, at once after a commit
// that stored one and after an acknowledgement here; devices every
// DevicePoll and after a commit, at most every minPoll.
func (s *Server) run(ctx context.Context, log *slog.Logger) {
	var commitDevices, commitEmergency <-chan struct{}
	if s.opt.Commits != nil {
		commitDevices, commitEmergency = s.opt.Commits.devices, s.opt.Commits.emergency
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		et := time.NewTicker(s.opt.EmergencyPoll)
		defer et.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-commitEmergency:
			case <-s.acked:
			case <-et.C:
			}
			s.pollEmergencies(ctx, log)
		}
	}()
	dt := time.NewTicker(s.opt.DevicePoll)
	defer dt.Stop()
	var lastDevices time.Time
	pending := time.NewTimer(time.Hour)
	pending.Stop()
	pollDevices := func() {
		lastDevices = time.Now()
		s.pollDevices(ctx, log)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-commitDevices:
			if wait := minPoll - time.Since(lastDevices); wait > 0 {
				pending.Reset(wait)
			} else {
				pollDevices()
			}
		case <-pending.C:
			pollDevices()
		case <-dt.C:
			if time.Since(lastDevices) >= minPoll {
				pollDevices()
			}
		}
	}
}

func (s *Server) pollEmergencies(ctx context.Context, log *slog.Logger) {
	em, err := s.emergencies(ctx)
	if err != nil {
		log.Warn("dashboard: emergencies", "err", err)
		return
	}
	b, _ := json.Marshal(em)
	s.hub.mu.Lock()
	changed := string(b) != s.hub.emerg
	s.hub.emerg = string(b)
	s.hub.mu.Unlock()
	if changed {
		s.hub.publishUrgent("emergencies", b)
	}
}

func (s *Server) pollDevices(ctx context.Context, log *slog.Logger) {
	devs, err := s.store.Devices(ctx, "")
	if err != nil {
		log.Warn("dashboard: devices", "err", err)
		return
	}
	var changed []deviceView
	s.hub.mu.Lock()
	for i := range devs {
		k := [2]string{devs[i].Fleet, devs[i].Device}
		fp := fingerprint(&devs[i])
		if s.hub.last[k] != fp {
			s.hub.last[k] = fp
			changed = append(changed, view(&devs[i]))
		}
	}
	s.hub.mu.Unlock()
	for len(changed) > 0 {
		n := min(len(changed), 500)
		b, _ := json.Marshal(changed[:n])
		s.hub.publish("devices", b)
		changed = changed[n:]
	}
}

// deviceView is a device as the map, the list and the event stream show
// it: the devices row, with the status columns of its last state message
// (platform.DeviceStatus). The whole state message goes only to the
// device page: 5,000 of them in every list would be megabytes.
type deviceView = platform.Device

func view(d *platform.Device) deviceView { return *d }
