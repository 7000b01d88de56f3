package web

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/platform"
)

//go:embed static
var staticFiles embed.FS

// Options configures the dashboard.
type Options struct {
	Users   Users
	TileURL string // Leaflet URL template ({z}/{x}/{y}); empty: the embedded world outline
	// TileAttribution is shown under the map for TileURL's tiles.
	TileAttribution string
	EmergencyPoll   time.Duration // default 250 ms
	DevicePoll      time.Duration // default 1 s
	Commits         *Commits      // nil: poll only
	Logger          *slog.Logger
}

// Server is the dashboard in front of the platform's read API.
type Server struct {
	store    *platform.Store
	api      http.Handler
	opt      Options
	sessions sessions
	audit    auditLog
	hub      hub
	mux      *http.ServeMux
	static   fs.FS

	acked  chan struct{} // an acknowledgement here: re-read the emergencies at once
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

var _ http.Handler = (*Server)(nil)

// New makes the dashboard for store, in front of api (platform.API), and
// starts its poller. Close stops it.
func New(ctx context.Context, store *platform.Store, api http.Handler, o Options) (*Server, error) {
	if len(o.Users) == 0 {
		return nil, errors.New("dashboard: no users")
	}
	if o.EmergencyPoll <= 0 {
		o.EmergencyPoll = 250 * time.Millisecond
	}
	if o.DevicePoll <= 0 {
		o.DevicePoll = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	st, _ := fs.Sub(staticFiles, "static")
	s := &Server{store: store, api: api, opt: o, static: st,
		sessions: sessions{m: map[string]*session{}},
		audit:    auditLog{db: store.DB(), postgres: store.Dialect() == "postgres"},
		hub:      hub{clients: map[*client]struct{}{}, last: map[[2]string]string{}},
		acked:    make(chan struct{}, 1),
	}
	if err := s.audit.init(ctx); err != nil {
		return nil, err
	}
	s.routes()
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.run(ctx, o.Logger) }()
	return s, nil
}

// Close stops the poller. Safe to call twice.
func (s *Server) Close() error {
	s.once.Do(func() { s.cancel(); s.wg.Wait() })
	return nil
}

// ServeHTTP answers /login and /healthz to anyone and everything else only
// within a session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data: "+tileOrigin(s.opt.TileURL)+"; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("Strict-Transport-Security", "max-age=31536000")
	switch r.URL.Path {
	case "/login", "/static/login.css", "/static/login.js":
		s.mux.ServeHTTP(w, r)
		return
	case "/healthz":
		s.api.ServeHTTP(w, r)
		return
	}
	sess := s.sessions.get(r)
	if sess == nil {
		if r.Method == http.MethodGet && r.URL.Path == "/" {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK(r, sess) {
		http.Error(w, "csrf token missing or wrong", http.StatusForbidden)
		return
	}
	s.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
}

type sessionKey struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// tileOrigin is the scheme and host of a tile URL template, for the CSP.
func tileOrigin(tiles string) string {
	if tiles == "" {
		return ""
	}
	u, err := url.Parse(strings.NewReplacer("{s}", "a", "{z}", "0", "{x}", "0", "{y}", "0").Replace(tiles))
	if err != nil || u.Host == "" {
		return ""
	}
	host := u.Host
	if strings.Contains(tiles, "{s}.") {
		host = "*." + strings.SplitN(host, ".", 2)[1]
	}
	return u.Scheme + "://" + host
}

func remote(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func (s *Server) routes() {
	m := http.NewServeMux()
	s.mux = m
	m.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) { s.file(w, r, "login.html") })
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("GET /static/login.css", func(w http.ResponseWriter, r *http.Request) { s.file(w, r, "app.css") })
	m.HandleFunc("GET /static/login.js", func(w http.ResponseWriter, r *http.Request) { s.file(w, r, "login.js") })
	m.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		s.sessions.drop(r)
		setCookie(w, "", -1)
		w.WriteHeader(http.StatusNoContent)
	})
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { s.file(w, r, "index.html") })
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(s.static)))
	m.HandleFunc("GET /web/session", func(w http.ResponseWriter, r *http.Request) {
		sess := sessionOf(r)
		writeJSON(w, map[string]any{"user": sess.user.Name, "role": sess.user.Role, "csrf": sess.csrf,
			"tiles": s.opt.TileURL, "attribution": s.opt.TileAttribution})
	})
	m.HandleFunc("GET /web/events", s.events)
	m.HandleFunc("GET /web/devices", func(w http.ResponseWriter, r *http.Request) {
		devs, err := s.store.Devices(r.Context(), "")
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		out := make([]deviceView, len(devs))
		for i := range devs {
			out[i] = view(&devs[i])
		}
		writeJSON(w, map[string]any{"devices": out, "now": time.Now().UTC()})
	})
	m.HandleFunc("GET /web/emergencies", func(w http.ResponseWriter, r *http.Request) {
		em, err := s.emergencies(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, em)
	})
	m.HandleFunc("POST /web/ack", s.ack)
	m.HandleFunc("GET /web/device", s.device)
	m.HandleFunc("GET /api/v1/track", s.track)
	m.Handle("/", s.api) // the read API and /metrics, behind the session
}

func (s *Server) file(w http.ResponseWriter, r *http.Request, name string) {
	http.ServeFileFS(w, r, s.static, name)
}

// maxLoginBody bounds a login form.
const maxLoginBody = 4096

// sameOrigin: the browser says the request comes from this site
// (Sec-Fetch-Site, else Origin); a client that sends neither is not a
// browser and cannot be led by another site.
func sameOrigin(r *http.Request) bool {
	if sf := r.Header.Get("Sec-Fetch-Site"); sf != "" {
		return sf == "same-origin" || sf == "none"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	// A cross-site form cannot log a victim in as someone else: the
	// browser's Origin must be this host.
	if !sameOrigin(r) {
		http.Error(w, "cross-origin login refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	u, ok := s.opt.Users.Check(r.PostForm.Get("user"), r.PostForm.Get("password"))
	if !ok {
		_ = s.audit.record(r.Context(), User{Name: r.PostForm.Get("user"), Role: "-"}, "login-failed", "", "", "", remote(r))
		http.Redirect(w, r, "/login?failed=1", http.StatusSeeOther)
		return
	}
	if err := s.audit.record(r.Context(), u, "login", "", "", "", remote(r)); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	id, _ := s.sessions.create(u)
	setCookie(w, id, int(sessionTTL.Seconds()))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	c := s.hub.subscribe()
	defer s.hub.unsubscribe(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "event: hello\ndata: {}\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	sess := sessionOf(r)
	send := func(f []byte) bool {
		if !s.sessions.live(sess) {
			return false
		}
		if _, err := w.Write(f); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	for {
		f := c.next(r.Context().Done(), keep.C)
		if f == nil || !send(f) {
			return
		}
	}
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	if sess.user.Role != RoleSupervisor {
		http.Error(w, "only a supervisor acknowledges emergencies", http.StatusForbidden)
		return
	}
	var k emergencyKey
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&k); err != nil || k.Device == "" {
		http.Error(w, "want {fleet, device, boot, seq}", http.StatusBadRequest)
		return
	}
	if err := s.audit.ack(r.Context(), sess.user, k, remote(r)); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	wake(s.acked)
	w.WriteHeader(http.StatusNoContent)
}

// track audits the view, then streams the read API's track.
func (s *Server) track(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	detail := fmt.Sprintf("from=%s to=%s format=%s", q.Get("from"), q.Get("to"), q.Get("format"))
	if err := s.audit.record(r.Context(), sessionOf(r).user, "view-track", q.Get("fleet"), q.Get("device"), detail, remote(r)); err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	s.api.ServeHTTP(w, r)
}

// eventView is one event on a device's timeline.
type eventView struct {
	Boot     uint32    `json:"boot"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Source   string    `json:"source"`
	Name     string    `json:"name"`
	Value    int64     `json:"value"`
	Text     string    `json:"text"`
	Priority string    `json:"priority"`
}

// device is one device's page data: its row, events and gaps in the range,
// and its last reported config.
func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fleet, dev := q.Get("fleet"), q.Get("device")
	now := time.Now()
	from, err := platform.ParseTime(q.Get("from"), now)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	to, err := platform.ParseTime(q.Get("to"), now)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	if to.IsZero() {
		to = now.Add(time.Hour)
	}
	devs, err := s.store.Devices(r.Context(), fleet)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	var found *deviceView
	for i := range devs {
		if devs[i].Device == dev {
			v := view(&devs[i])
			found = &v
			break
		}
	}
	if found == nil {
		httpError(w, http.StatusNotFound, fmt.Errorf("device %q in fleet %q: not known", dev, fleet))
		return
	}
	db := s.store.DB()
	rows, err := db.QueryContext(r.Context(), s.audit.q(`SELECT boot, seq, time, type, source, name, value, text, priority FROM events
WHERE fleet = ? AND device = ? AND time >= ? AND time < ? ORDER BY time LIMIT 2000`), found.Fleet, dev, s.since(from), s.since(to))
	if err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	evs := []eventView{}
	for rows.Next() {
		var e eventView
		var boot, seq int64
		var t any
		if err := rows.Scan(&boot, &seq, &t, &e.Type, &e.Source, &e.Name, &e.Value, &e.Text, &e.Priority); err != nil {
			rows.Close()
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		e.Boot, e.Seq, e.Time = uint32(boot), uint64(seq), asTime(t)
		evs = append(evs, e)
	}
	rows.Close()
	gaps, err := s.store.Gaps(r.Context(), platform.GapQuery{Fleet: found.Fleet, Device: dev, All: true})
	if err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return
	}
	if gaps == nil {
		gaps = []platform.Gap{}
	}
	var cfg json.RawMessage
	var payload sql.NullString
	var cfgAt any
	err = db.QueryRowContext(r.Context(), s.audit.q(`SELECT payload, received FROM reports WHERE fleet = ? AND device = ? AND channel = ? ORDER BY received DESC LIMIT 1`),
		found.Fleet, dev, platform.ChannelConfigReported).Scan(&payload, &cfgAt)
	if err == nil && json.Valid([]byte(payload.String)) {
		cfg = json.RawMessage(payload.String)
	}
	// The latest record of each status kind, in full (the state message
	// has a summary): one indexed read each.
	latest := map[string]json.RawMessage{}
	for _, kind := range []string{"battery", "radio", "link", "gps", "thermal"} {
		var body sql.NullString
		if err := db.QueryRowContext(r.Context(), s.audit.q(`SELECT body FROM records WHERE fleet = ? AND device = ? AND kind = ? ORDER BY time DESC LIMIT 1`),
			found.Fleet, dev, kind).Scan(&body); err == nil && json.Valid([]byte(body.String)) {
			latest[kind] = json.RawMessage(body.String)
		}
	}
	var state map[string]any
	if found.State != "" {
		_ = json.Unmarshal([]byte(found.State), &state)
	}
	writeJSON(w, map[string]any{"device": found, "state": state, "events": evs, "gaps": gaps, "config": cfg, "config_received": asTime(cfgAt), "latest": latest})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
