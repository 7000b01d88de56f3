package platform

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// ParseTime reads a --from/--to or from=/to= value: RFC 3339, or a
// duration before now ("2h").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2019-06-19T10:04:22Z) or a duration before now (2h)", s)
}

// API serves the read side as JSON over HTTP:
//
//	GET /api/v1/devices[?fleet=F]
//	GET /api/v1/gaps[?fleet=F][&device=D][&all=1]
//	GET /api/v1/track?device=D[&fleet=F][&from=T][&to=T][&format=geojson|jsonl|gpx|csv][&limit=N]
//	GET /metrics (Prometheus), GET /healthz
func API(s *Store, m *Metrics, healthy func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/devices", func(w http.ResponseWriter, r *http.Request) {
		devs, err := s.Devices(r.Context(), r.URL.Query().Get("fleet"))
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, map[string]any{"devices": nonNil(devs)})
	})
	mux.HandleFunc("GET /api/v1/gaps", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		gs, err := s.Gaps(r.Context(), GapQuery{Fleet: q.Get("fleet"), Device: q.Get("device"), All: q.Get("all") == "1" || q.Get("all") == "true"})
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, map[string]any{"gaps": nonNil(gs)})
	})
	mux.HandleFunc("GET /api/v1/track", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tq := TrackQuery{Fleet: q.Get("fleet"), Device: q.Get("device")}
		if tq.Device == "" {
			httpError(w, http.StatusBadRequest, fmt.Errorf("device is required"))
			return
		}
		now := time.Now()
		var err error
		if tq.From, err = ParseTime(q.Get("from"), now); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		if tq.To, err = ParseTime(q.Get("to"), now); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		if l := q.Get("limit"); l != "" {
			if _, err := fmt.Sscan(l, &tq.Limit); err != nil || tq.Limit < 0 {
				httpError(w, http.StatusBadRequest, fmt.Errorf("limit %q: a count", l))
				return
			}
		}
		format := q.Get("format")
		if format == "" {
			format = "geojson"
		}
		if !slices.Contains(TrackFormats, format) {
			httpError(w, http.StatusBadRequest, fmt.Errorf("format %q: want one of %v", format, TrackFormats))
			return
		}
		w.Header().Set("Content-Type", ContentType(format))
		tw, _ := NewTrackWriter(w, format, tq.Device)
		if err := s.Track(r.Context(), tq, tw.Write); err != nil {
			// Headers are gone; the truncated body is the signal.
			_ = tw.Close()
			return
		}
		_ = tw.Close()
	})
	if m != nil {
		mux.Handle("GET /metrics", m.Handler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DB().PingContext(r.Context()); err != nil || (healthy != nil && !healthy()) {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
