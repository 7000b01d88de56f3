// Package eventsock is the Unix socket on which the camera firmware reports
// its events (recording, emergency button, dock, battery, tamper, holster,
// taser). The line protocol is in protocol.go and docs/hooks.md.
//
// Peers are identified by SO_PEERCRED, not by anything they say: a peer
// whose uid is not in AllowUIDs and whose gid is not in AllowGIDs is told
// "error permission denied" and disconnected. Each allowed uid has a token
// bucket; emergencies draw from a bucket of their own, so that a chatty
// firmware cannot starve the emergency button.
//
// Connections are bounded (MaxConns), but a full table never turns an
// allowed peer away: the connection that has gone longest without an event
// is closed to make room, so idle or leaked connections cannot keep the
// emergency button out. Only events count as activity: blank lines do not
// keep a connection open past IdleTimeout.
package eventsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// DefaultPath is where the agent listens unless configured otherwise.
const DefaultPath = "/run/kestrel/events.sock"

// Defaults for Options fields left zero.
const (
	DefaultRatePerSec  = 5
	DefaultBurst       = 20
	DefaultMode        = 0o660
	DefaultMaxConns    = 16
	DefaultIdleTimeout = 5 * time.Minute

	// The emergency lane of each uid: enough for a panicking officer
	// pressing the button again and again, not enough to flood the
	// never-evicted emergency lane of the spool.
	emergencyRate  = 1
	emergencyBurst = 10
)

// Options configure a Server.
type Options struct {
	// AllowUIDs and AllowGIDs list the peers that may post events: a peer
	// is allowed if its uid or its primary gid is listed. When both are
	// empty only the agent's own effective uid is allowed.
	AllowUIDs, AllowGIDs []int
	// RatePerSec and Burst size each uid's token bucket for
	// non-emergency events (and malformed lines).
	RatePerSec float64
	Burst      int
	// Mode of the socket file; DefaultMode (0660) when zero.
	Mode os.FileMode
	// MaxConns bounds connections open at once. When an allowed peer
	// connects to a full table, the connection idle longest is closed.
	MaxConns int
	// IdleTimeout closes a connection that sends no event for this long
	// (blank lines do not count).
	IdleTimeout time.Duration
	Logger      *slog.Logger
	// Now stamps events that carry no time of their own (default
	// time.Now): the agent passes its clock.
	Now func() time.Time
}

// Stats count what the server saw since Listen.
type Stats struct {
	Accepted    uint64 // events handed to the agent
	Malformed   uint64 // lines answered with a decoding error
	RateLimited uint64 // lines refused by the rate limit
	Refused     uint64 // connections refused (peer credentials)
	Evicted     uint64 // idle connections closed to make room for a new one
}

// ErrRejected is wrapped by Send when the server answered "error ...".
var ErrRejected = errors.New("event rejected")

// Server accepts firmware connections.
type Server struct {
	path string
	opts Options
	log  *slog.Logger
	ln   *net.UnixListener

	mu      sync.Mutex
	conns   map[net.Conn]*connState
	buckets map[bucketKey]*bucket
	closed  bool
	emitMu  sync.Mutex
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	accepted, malformed, limited, refused, evicted atomic.Uint64
}

// connState is what the server knows of one connection.
type connState struct {
	allowed   bool  // peer credentials checked and allowed
	lastEvent int64 // unix nanoseconds of the last event (or of the accept)
}

// Listen creates the socket at path (and its directory, 0755, if missing).
// A stale socket left by a crash is replaced; a live one, or a file that is
// not a socket, is an error.
func Listen(path string, opts Options) (*Server, error) {
	if opts.RatePerSec <= 0 {
		opts.RatePerSec = DefaultRatePerSec
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	if opts.Mode == 0 {
		opts.Mode = DefaultMode
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if len(opts.AllowUIDs) == 0 && len(opts.AllowGIDs) == 0 {
		opts.AllowUIDs = []int{os.Geteuid()}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("event socket: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("event socket: %w", err)
	}
	if err := os.Chmod(path, opts.Mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("event socket: %w", err)
	}
	return &Server{
		path: path, opts: opts, log: log.With("hook", "eventsock", "socket", path), ln: ln,
		conns: make(map[net.Conn]*connState), buckets: make(map[bucketKey]*bucket),
	}, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("event socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("event socket: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("event socket: %s: another process is listening", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("event socket: remove stale %s: %w", path, err)
	}
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{s.accepted.Load(), s.malformed.Load(), s.limited.Load(), s.refused.Load(), s.evicted.Load()}
}

// Close stops accepting, disconnects every client, waits for their
// goroutines and removes the socket file. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.closeErr = s.ln.Close() // also unlinks the socket file
		s.wg.Wait()
	})
	return s.closeErr
}

// Run accepts connections until ctx is done or the server is closed, and
// then closes it. emit is never called concurrently; each "ok" is written
// after emit returns.
func (s *Server) Run(ctx context.Context, emit func(kestrel.Record)) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	defer s.Close()
	var tempDelay time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off instead of spinning.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else {
				tempDelay = min(2*tempDelay, time.Second)
			}
			s.log.Error("accept", "err", err)
			time.Sleep(tempDelay)
			continue
		}
		tempDelay = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serve(c, emit)
		}()
	}
}

// track registers c and its goroutine under the lock Close takes, so that
// Close either sees the connection or Run sees the server closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = &connState{lastEvent: time.Now().UnixNano()}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) refuse(c net.Conn, reason string, args ...any) {
	// Logged at the 1st, 2nd, 4th, 8th... refusal: a local user hammering
	// the socket must not flood the log (and the flash under it).
	if n := s.refused.Add(1); n&(n-1) == 0 {
		s.log.Warn("firmware client refused: "+reason, append(args, "refused_total", n)...)
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(c, "error "+reason+"\n")
}

func (s *Server) serve(c *net.UnixConn, emit func(kestrel.Record)) {
	cred, err := peerCred(c)
	if err != nil {
		s.refuse(c, "permission denied", "err", err)
		return
	}
	if !slices.Contains(s.opts.AllowUIDs, cred.UID) && !slices.Contains(s.opts.AllowGIDs, cred.GID) {
		s.refuse(c, "permission denied", "uid", cred.UID, "gid", cred.GID, "pid", cred.PID)
		return
	}
	if victim, n := s.admit(c); victim != nil {
		victim.Close()
		if k := s.evicted.Add(1); k&(k-1) == 0 { // log at 1, 2, 4, 8...
			s.log.Warn("event socket full: closed the connection idle longest to admit a new one",
				"uid", cred.UID, "pid", cred.PID, "open", n, "max", s.opts.MaxConns, "evicted_total", k)
		}
	}
	log := s.log.With("uid", cred.UID, "pid", cred.PID)

	r := bufio.NewReaderSize(c, MaxLine)
	w := bufio.NewWriter(c)
	lastEvent := time.Now()
	for {
		// Only events move the deadline: a peer that sends blank lines
		// is as idle as one that sends nothing.
		c.SetReadDeadline(lastEvent.Add(s.opts.IdleTimeout))
		line, err := r.ReadSlice('\n')
		tooLong := errors.Is(err, bufio.ErrBufferFull)
		if tooLong {
			// Swallow the rest of the over-long line so the next one parses.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
		}
		if len(line) == 0 && err != nil {
			return // EOF, idle timeout, or closed by Close
		}
		reply := s.handle(line, tooLong, cred.UID, emit, log)
		if reply != "" {
			lastEvent = time.Now()
			s.touch(c, lastEvent)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			w.WriteString(reply)
			w.WriteByte('\n')
			if w.Flush() != nil {
				return
			}
		}
		if err != nil {
			return // an unterminated last line was answered; the peer is done
		}
	}
}

// admit marks c allowed. When that makes more than MaxConns allowed
// connections, it returns the allowed connection (other than c) whose last
// event is oldest, for the caller to close, and the number open.
func (s *Server) admit(c net.Conn) (victim net.Conn, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c].allowed = true
	var oldest int64
	for o, st := range s.conns {
		if !st.allowed {
			continue
		}
		open++
		if o != c && (victim == nil || st.lastEvent < oldest) {
			victim, oldest = o, st.lastEvent
		}
	}
	if open <= s.opts.MaxConns {
		return nil, open
	}
	// The victim no longer counts: a second arrival picks another.
	s.conns[victim].allowed = false
	return victim, open
}

func (s *Server) touch(c net.Conn, t time.Time) {
	s.mu.Lock()
	if st := s.conns[c]; st != nil {
		st.lastEvent = t.UnixNano()
	}
	s.mu.Unlock()
}

// handle answers one line: "" (blank line, no answer), "ok" or "error ...".
func (s *Server) handle(line []byte, tooLong bool, uid int, emit func(kestrel.Record), log *slog.Logger) string {
	var (
		m   Message
		err error
	)
	if tooLong {
		err = fmt.Errorf("line too long (max %d bytes)", MaxLine)
	} else {
		m, err = ParseLine(line)
		if errors.Is(err, errBlank) {
			return ""
		}
	}
	lane := laneGeneral
	if err == nil && m.Type == kestrel.EventEmergency {
		lane = laneEmergency
	}
	if !s.allow(bucketKey{uid, lane}, time.Now()) {
		if n := s.limited.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8...
			log.Warn("firmware client rate limited", "total", n)
		}
		return "error rate limited"
	}
	if err != nil {
		s.malformed.Add(1)
		log.Debug("malformed firmware event", "err", err)
		return "error " + err.Error()
	}
	now := time.Now
	if s.opts.Now != nil {
		now = s.opts.Now
	}
	s.emitMu.Lock()
	emit(m.Record(now().UnixMilli()))
	s.emitMu.Unlock()
	s.accepted.Add(1)
	if m.Priority >= kestrel.PriorityHigh {
		log.Info("firmware event", "type", m.Type, "name", m.Name)
	}
	return "ok"
}

type lane uint8

const (
	laneGeneral lane = iota
	laneEmergency
)

type bucketKey struct {
	uid  int
	lane lane
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (s *Server) allow(k bucketKey, now time.Time) bool {
	rate, burst := s.opts.RatePerSec, float64(s.opts.Burst)
	if k.lane == laneEmergency {
		rate, burst = emergencyRate, emergencyBurst
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[k]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		s.buckets[k] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Send posts one event to the server at path and returns its reply line
// ("ok"). When the server answers "error REASON" the reply is returned with
// an error wrapping ErrRejected. Used by `kestrel hook send`.
func Send(path, typ string, kv map[string]string) (string, error) {
	line, err := FormatLine(typ, kv)
	if err != nil {
		return "", err
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("event socket: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, werr := io.WriteString(c, line)
	// Read even when the write failed: a server that refuses us writes its
	// reason and hangs up, possibly before our line went out.
	reply, err := bufio.NewReaderSize(c, 256).ReadString('\n')
	if err != nil && reply == "" {
		if werr != nil {
			return "", fmt.Errorf("event socket: send: %w", werr)
		}
		return "", fmt.Errorf("event socket: no reply: %w", err)
	}
	reply = trimEOL(reply)
	if reply == "ok" {
		return reply, nil
	}
	if r, ok := strings.CutPrefix(reply, "error "); ok {
		return reply, fmt.Errorf("%w: %s", ErrRejected, r)
	}
	return reply, fmt.Errorf("event socket: unexpected reply %q", clip(reply))
}

func trimEOL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
