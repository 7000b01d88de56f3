package web

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kestrel-edge/kestrel/platform"
)

// HTTPConfig is how "kestrel-platform serve" serves HTTP.
type HTTPConfig struct {
	Addr      string
	UsersFile string
	// Users, when set, are the dashboard's users instead of UsersFile's
	// (kestrel demo's one-time login, held in memory only).
	Users            Users
	TLSCert, TLSKey  string
	TLSDir           string
	Plaintext        bool
	Tiles            string
	TilesAttribution string
	// Commits, when set (and given to ingest as OnCommit), makes the
	// dashboard read new data as soon as it is committed.
	Commits *Commits
}

// Flags registers the dashboard's flags of "serve" (beside --http).
func (c *HTTPConfig) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.UsersFile, "users", "", "dashboard users file (name:role:bcrypt-hash a line, mode 0600); with it --http serves the dashboard, everything behind a login")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "HTTPS certificate (PEM); default: a self-signed one made in --tls-dir")
	fs.StringVar(&c.TLSKey, "tls-key", "", "HTTPS key (PEM)")
	fs.StringVar(&c.TLSDir, "tls-dir", "", "where the self-signed certificate is kept (default $STATE_DIRECTORY, else the user config dir)/kestrel-platform")
	fs.BoolVar(&c.Plaintext, "http-plaintext", false, "serve plain HTTP instead of HTTPS; only on a loopback address")
	fs.StringVar(&c.Tiles, "tiles", os.Getenv("KESTREL_TILE_URL"), "map tile URL template ({z}/{x}/{y}, $KESTREL_TILE_URL); empty: the embedded world outline")
	fs.StringVar(&c.TilesAttribution, "tiles-attribution", os.Getenv("KESTREL_TILE_ATTRIBUTION"), "attribution shown for --tiles")
}

// Loopback reports whether addr (host:port) names a loopback host; an
// empty host (all interfaces) is not one.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Listening is a started HTTP server.
type Listening struct {
	Addr   string
	Scheme string // "https" or "http"
	srv    *http.Server
	dash   *Server
}

// Close stops the server and the dashboard's poller. Safe to call twice.
func (l *Listening) Close() error {
	err := l.srv.Close()
	if l.dash != nil {
		l.dash.Close()
	}
	return err
}

// Start serves api (platform.API) on c.Addr. With a users file the
// dashboard is in front of everything, over TLS unless c.Plaintext on
// loopback. Without one the read API alone is served, and only on a
// loopback address (for local tools and a Prometheus on the same host).
func Start(ctx context.Context, c HTTPConfig, store *platform.Store, api http.Handler, log *slog.Logger) (*Listening, error) {
	if c.UsersFile == "" && len(c.Users) == 0 {
		if !Loopback(c.Addr) {
			return nil, fmt.Errorf("http %s: without --users the unauthenticated read API is served only on a loopback address", c.Addr)
		}
		if c.TLSCert != "" || c.Tiles != "" {
			return nil, errors.New("http: --tls-cert and --tiles are for the dashboard, which needs --users")
		}
		return listen(c.Addr, api, nil, nil, log)
	}
	if c.Plaintext && !Loopback(c.Addr) {
		return nil, fmt.Errorf("http %s: --http-plaintext only on a loopback address", c.Addr)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("http: --tls-cert and --tls-key go together")
	}
	users, err := c.Users, error(nil)
	if len(users) == 0 {
		if users, err = LoadUsers(c.UsersFile); err != nil {
			return nil, err
		}
	}
	var tc *tls.Config
	if !c.Plaintext {
		cert, key := c.TLSCert, c.TLSKey
		if cert == "" {
			dir := c.TLSDir
			if dir == "" {
				dir = os.Getenv("STATE_DIRECTORY")
				if dir == "" {
					if dir, err = os.UserConfigDir(); err != nil {
						return nil, fmt.Errorf("http: no --tls-dir: %w", err)
					}
				}
				dir = filepath.Join(dir, "kestrel-platform")
			}
			cert, key = filepath.Join(dir, "dashboard.crt"), filepath.Join(dir, "dashboard.key")
		}
		host, _, _ := net.SplitHostPort(c.Addr)
		hosts := []string{host}
		if h, err := os.Hostname(); err == nil {
			hosts = append(hosts, h)
		}
		kp, made, err := LoadOrCreateCert(cert, key, hosts)
		if err != nil {
			return nil, err
		}
		if made {
			log.Warn("http: made a self-signed certificate; give --tls-cert/--tls-key for one browsers trust", "cert", cert)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}
	dash, err := New(ctx, store, api, Options{Users: users, TileURL: c.Tiles, TileAttribution: c.TilesAttribution, Logger: log, Commits: c.Commits})
	if err != nil {
		return nil, err
	}
	l, err := listen(c.Addr, dash, dash, tc, log)
	if err != nil {
		dash.Close()
	}
	return l, err
}

// readTimeout bounds reading a whole request, body included, so that a
// client trickling a login body cannot hold a connection (it bounds the
// request, not a response: the event stream lives on, as
// TestSlowBodyCutEventStreamKept checks); idleTimeout closes idle
// keep-alive connections.
// Variables for the tests.
var (
	readTimeout = 30 * time.Second
	idleTimeout = 2 * time.Minute
)

func listen(addr string, h http.Handler, dash *Server, tc *tls.Config, log *slog.Logger) (*Listening, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	l := &Listening{Addr: ln.Addr().String(), Scheme: "http", dash: dash,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: readTimeout, IdleTimeout: idleTimeout,
			TLSConfig: tc, MaxHeaderBytes: 64 << 10}}
	if tc != nil {
		l.Scheme = "https"
		ln = tls.NewListener(ln, tc)
	}
	go func() {
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http", "err", err)
		}
	}()
	what := "read API and /metrics"
	if dash != nil {
		what = "dashboard, read API and /metrics, behind a login"
	}
	log.Info("http: "+what, "url", l.Scheme+"://"+l.Addr)
	return l, nil
}
