package localctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPath is where the agent listens unless configured otherwise
// (config key status.socket).
const DefaultPath = "/run/kestrel/control.sock"

const (
	maxRequest   = 64
	requestTime  = 2 * time.Second
	maxReply     = 1 << 20
	maxConns     = 8
	socketMode   = 0o660
	statusVerb   = "status"
	replyTimeout = 5 * time.Second
)

// Status is the agent's live state as `kestrel status` shows it.
type Status struct {
	PID           int               `json:"pid"`
	Version       string            `json:"version"`
	Device        string            `json:"device"`
	Fleet         string            `json:"fleet"`
	Boot          uint32            `json:"boot"`
	Started       time.Time         `json:"started"`
	Now           time.Time         `json:"now"`
	ConfigVersion uint64            `json:"config_version"`
	Parts         []Part            `json:"parts"`
	GPS           *GPS              `json:"gps,omitempty"`
	Radio         *Radio            `json:"radio,omitempty"`
	Spool         Spool             `json:"spool"`
	Broker        Broker            `json:"broker"`
	Capabilities  map[string]string `json:"capabilities,omitempty"`
}

// Part is one configured part and the device it holds.
type Part struct {
	Name   string `json:"name"`
	Device string `json:"device,omitempty"`
	State  string `json:"state"`
}

// GPS is the receiver's state and the last fix.
type GPS struct {
	State      string     `json:"state"`
	Mode       int        `json:"mode"`
	SatsUsed   int        `json:"sats_used"`
	SatsInView int        `json:"sats_in_view"`
	HDOP       float64    `json:"hdop,omitempty"`
	Sentences  uint64     `json:"sentences"`
	BadFrames  uint64     `json:"bad_frames"`
	LastFix    *time.Time `json:"last_fix,omitempty"`
	Lat        float64    `json:"lat,omitempty"`
	Lon        float64    `json:"lon,omitempty"`
}

// Radio is the radio's registration and signal.
type Radio struct {
	Profile    string `json:"profile"`
	Online     bool   `json:"online"`
	Registered string `json:"registered"`
	RSSI       int    `json:"rssi_dbm,omitempty"`
	RSRP       int    `json:"rsrp_dbm,omitempty"`
	Operator   string `json:"operator,omitempty"`
}

// Spool is the depth of each lane and the store's health.
type Spool struct {
	Health  string         `json:"health"`
	Records int            `json:"records"`
	Bytes   int64          `json:"bytes"`
	Max     int64          `json:"max_bytes"`
	Lanes   map[string]int `json:"lanes"`
	Oldest  float64        `json:"oldest_s"`
	Writes  string         `json:"writes"`
}

// Broker is the MQTT session's state.
type Broker struct {
	Connected bool       `json:"connected"`
	URLs      []string   `json:"urls"`
	LastAck   *time.Time `json:"last_puback,omitempty"`
	Messages  uint64     `json:"messages_acked"`
	Records   uint64     `json:"records_acked"`
}

// Server answers status requests.
type Server struct {
	path   string
	ln     *net.UnixListener
	status func() Status
	log    *slog.Logger
	wg     sync.WaitGroup
	sem    chan struct{}
	once   sync.Once
	err    error
}

// Listen creates the socket at path (its directory too, 0755). A stale
// socket left by a crash is replaced; a live one is an error (another
// agent runs).
func Listen(path string, status func() Status, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket: %s: another agent is listening", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{path: path, ln: ln, status: status, log: log, sem: make(chan struct{}, maxConns)}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Run serves until ctx ends or Close is called.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.Close() // a busy socket drops callers; `kestrel status` retries
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer c.Close()
			s.serve(c)
		}()
	}
}

// Close stops the server and removes the socket file. Safe to call twice.
func (s *Server) Close() error {
	s.once.Do(func() { s.err = s.ln.Close() })
	return s.err
}

func allowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid() || int(cred.Gid) == os.Getegid()
}

func (s *Server) serve(c *net.UnixConn) {
	if !allowed(c) {
		io.WriteString(c, `{"error":"permission denied"}`+"\n")
		return
	}
	c.SetReadDeadline(time.Now().Add(requestTime))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest), maxRequest).ReadString('\n')
	if err != nil && line == "" {
		return
	}
	c.SetWriteDeadline(time.Now().Add(replyTimeout))
	if strings.TrimSpace(line) != statusVerb {
		io.WriteString(c, `{"error":"unknown request; send \"status\""}`+"\n")
		return
	}
	b, err := json.Marshal(s.status())
	if err != nil {
		s.log.Error("control socket: encode status", "err", err)
		return
	}
	c.Write(append(b, '\n'))
}

// ErrNoAgent means nothing listens at the socket: the agent is not running
// (or uses another status.socket).
var ErrNoAgent = errors.New("no running agent")

// Query asks the agent at path for its status.
func Query(ctx context.Context, path string) (Status, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return Status{}, fmt.Errorf("%w at %s", ErrNoAgent, path)
		}
		return Status{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer c.Close()
	deadline := time.Now().Add(replyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, statusVerb+"\n"); err != nil {
		return Status{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	b, err := bufio.NewReaderSize(io.LimitReader(c, maxReply), 4096).ReadBytes('\n')
	if err != nil && len(b) == 0 {
		return Status{}, fmt.Errorf("control socket %s: no reply: %w", path, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return Status{}, fmt.Errorf("control socket %s: %s", path, e.Error)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return Status{}, fmt.Errorf("control socket %s: bad reply: %w", path, err)
	}
	return st, nil
}
