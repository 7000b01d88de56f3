package eventsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The test binary doubles as a firmware client run under another uid: see
// runAs.
func TestMain(m *testing.M) {
	if p := os.Getenv("EVENTSOCK_TEST_CLIENT"); p != "" {
		reply, err := Send(p, "emergency", map[string]string{"name": "child"})
		fmt.Printf("%s\n", reply)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type sink struct {
	mu   sync.Mutex
	recs []kestrel.Record
}

func (s *sink) emit(r kestrel.Record) {
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
}

func (s *sink) all() []kestrel.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]kestrel.Record(nil), s.recs...)
}

// publicDir is a directory every uid can enter (t.TempDir is 0700).
func publicDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "eventsock-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func start(t testing.TB, opts Options) (string, *Server, *sink) {
	t.Helper()
	path := filepath.Join(publicDir(t), "run", "events.sock")
	srv, err := Listen(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := &sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, out.emit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left behind: %v", err)
		}
	})
	return path, srv, out
}

// conn is a raw client: what a firmware shell script with socat does.
type conn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dial(t testing.TB, path string) *conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &conn{t, c, bufio.NewReader(c)}
}

func (c *conn) ask(line string) string {
	c.t.Helper()
	if _, err := c.c.Write([]byte(line)); err != nil {
		c.t.Fatal(err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reply to %.40q: %v", line, err)
	}
	return strings.TrimSuffix(reply, "\n")
}

func TestSendEveryType(t *testing.T) {
	path, srv, out := start(t, Options{})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	want := map[kestrel.EventType]kestrel.Priority{
		kestrel.EventRecordingStart: kestrel.PriorityNormal, kestrel.EventRecordingStop: kestrel.PriorityNormal,
		kestrel.EventEmergency: kestrel.PriorityEmergency, kestrel.EventDocked: kestrel.PriorityNormal,
		kestrel.EventUndocked: kestrel.PriorityNormal, kestrel.EventBatteryCritical: kestrel.PriorityNormal,
		kestrel.EventTamper: kestrel.PriorityHigh, kestrel.EventHolster: kestrel.PriorityNormal,
		kestrel.EventTaser: kestrel.PriorityHigh,
	}
	for typ := range want {
		reply, err := Send(path, typ.String(), map[string]string{"name": "fw", "text": "with spaces", "value": "42", "time": "1764172800123"})
		if err != nil || reply != "ok" {
			t.Fatalf("%v: %q %v", typ, reply, err)
		}
	}
	recs := out.all()
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		ev := r.Body.(*kestrel.Event)
		if r.Priority != want[ev.Type] || ev.Source != "firmware" || ev.Name != "fw" || ev.Text != "with spaces" ||
			ev.Value != 42 || r.Time != 1764172800123 {
			t.Errorf("record %+v %+v", r.Envelope, ev)
		}
	}
	// Without time= the agent's clock stamps it.
	before := time.Now().UnixMilli()
	if _, err := Send(path, "docked", nil); err != nil {
		t.Fatal(err)
	}
	recs = out.all()
	if last := recs[len(recs)-1]; last.Time < before || last.Time > time.Now().UnixMilli() {
		t.Errorf("time %d not stamped at receipt", last.Time)
	}
	if st := srv.Stats(); st.Accepted != uint64(len(want))+1 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestMalformedLinesAnsweredAndCounted(t *testing.T) {
	path, srv, out := start(t, Options{})
	c := dial(t, path)
	for line, want := range map[string]string{
		"sprinkle\n":                          `error unknown event type "sprinkle"`,
		"emergency colour=red\n":              `error unknown key "colour" (want name, value, text or time)`,
		"emergency text=\"unterminated\n":     "error unterminated quoted value",
		strings.Repeat("x", 3*MaxLine) + "\n": fmt.Sprintf("error line too long (max %d bytes)", MaxLine),
	} {
		if got := c.ask(line); got != want {
			t.Errorf("%.30q: got %q, want %q", line, got, want)
		}
	}
	// Blank lines get no answer; the connection still works after errors.
	if got := c.ask("\n\r\n  \ntamper name=lid\n"); got != "ok" {
		t.Errorf("after errors: %q", got)
	}
	if st := srv.Stats(); st.Malformed != 4 || st.Accepted != 1 {
		t.Errorf("stats %+v", st)
	}
	if n := len(out.all()); n != 1 {
		t.Errorf("%d records", n)
	}
	// A last line without its LF, then EOF (printf without \n | socat).
	c2 := dial(t, path)
	c2.c.Write([]byte("holster"))
	c2.c.(*net.UnixConn).CloseWrite()
	if r, err := c2.r.ReadString('\n'); r != "ok\n" {
		t.Errorf("unterminated last line: %q %v", r, err)
	}
}

func TestRateLimitPerUIDWithEmergencyLane(t *testing.T) {
	path, srv, out := start(t, Options{RatePerSec: 0.001, Burst: 3})
	c := dial(t, path)
	for i := range 3 {
		if got := c.ask("docked\n"); got != "ok" {
			t.Fatalf("event %d: %q", i, got)
		}
	}
	// A new connection from the same uid shares the bucket.
	c2 := dial(t, path)
	if got := c2.ask("docked\n"); got != "error rate limited" {
		t.Errorf("4th event: %q", got)
	}
	if got := c2.ask("garbage\n"); got != "error rate limited" {
		t.Errorf("malformed while limited: %q", got)
	}
	// The emergency button still gets through.
	if got := c2.ask("emergency name=button\n"); got != "ok" {
		t.Errorf("emergency while limited: %q", got)
	}
	_, err := Send(path, "undocked", nil)
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "rate limited") {
		t.Errorf("Send while limited: %v", err)
	}
	if st := srv.Stats(); st.RateLimited != 3 || st.Accepted != 4 {
		t.Errorf("stats %+v", st)
	}
	if recs := out.all(); recs[len(recs)-1].Priority != kestrel.PriorityEmergency {
		t.Errorf("last record %+v", recs[len(recs)-1].Envelope)
	}
}

func TestPeerNotOnAllowListRefused(t *testing.T) {
	// This process's uid is left off the list.
	path, srv, out := start(t, Options{AllowUIDs: []int{os.Geteuid() + 4242}})
	reply, err := Send(path, "emergency", nil)
	if reply != "error permission denied" || !errors.Is(err, ErrRejected) {
		t.Errorf("got %q, %v", reply, err)
	}
	if st := srv.Stats(); st.Refused != 1 || st.Accepted != 0 || len(out.all()) != 0 {
		t.Errorf("stats %+v, %d records", st, len(out.all()))
	}
}

// runAs runs this test binary as a firmware client under uid/gid.
func runAs(t *testing.T, path string, uid, gid uint32) (string, int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The go test binary sits in a 0700 build directory: copy it out.
	bin := filepath.Join(publicDir(t), "client")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "EVENTSOCK_TEST_CLIENT="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	code := 0
	if errors.Is(err, syscall.ENOEXEC) {
		// qemu-user without binfmt_misc cannot start a foreign binary.
		t.Skipf("cannot re-execute the test binary here: %v", err)
	}
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Logf("client uid %d: %q exit %d %s", uid, outb, code, stderr.String())
	return strings.TrimSpace(string(outb)), code
}

// TestOtherUIDByPeerCred is the acceptance test of issue 8: a client
// running under a uid that is not allowed is refused on its kernel-reported
// credentials, and accepted when its uid or gid is allowed.
func TestOtherUIDByPeerCred(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client under another uid")
	}
	const nobody = 65534
	for _, tc := range []struct {
		name       string
		opts       Options
		wantReply  string
		wantCode   int
		wantEvents int
	}{
		{"uid not allowed", Options{AllowUIDs: []int{0}, Mode: 0o666}, "error permission denied", 3, 0},
		{"uid allowed", Options{AllowUIDs: []int{nobody}, Mode: 0o666}, "ok", 0, 1},
		{"gid allowed", Options{AllowUIDs: []int{0}, AllowGIDs: []int{nobody}, Mode: 0o666}, "ok", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, srv, out := start(t, tc.opts)
			reply, code := runAs(t, path, nobody, nobody)
			if reply != tc.wantReply || code != tc.wantCode {
				t.Errorf("reply %q exit %d, want %q exit %d", reply, code, tc.wantReply, tc.wantCode)
			}
			if n := len(out.all()); n != tc.wantEvents {
				t.Errorf("%d events, want %d", n, tc.wantEvents)
			}
			if tc.wantEvents == 0 && srv.Stats().Refused != 1 {
				t.Errorf("stats %+v", srv.Stats())
			}
		})
	}
}

func TestStaleAndLiveSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.sock")
	// A socket file left by a crashed agent: bound, never unlinked.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	srv, err := Listen(path, Options{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if _, err := Listen(path, Options{}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second listener: %v", err)
	}
	srv.Close()
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
}

func TestCloseDisconnectsClients(t *testing.T) {
	path, srv, _ := start(t, Options{})
	c := dial(t, path)
	if got := c.ask("docked\n"); got != "ok" {
		t.Fatal(got)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
}

// The attack of issue 16: an allowed uid opens MaxConns connections and
// leaves them idle. The emergency button's connection must still get in.
func TestIdleConnectionsCannotBlockEmergency(t *testing.T) {
	path, srv, out := start(t, Options{})
	idle := make([]*conn, DefaultMaxConns)
	for i := range idle {
		idle[i] = dial(t, path)
		if r := idle[i].ask("recording_start\n"); r != "ok" {
			t.Fatalf("idle client %d: %q", i, r)
		}
	}
	for round := 0; round < 3; round++ {
		if r := dial(t, path).ask("emergency name=button\n"); r != "ok" {
			t.Fatalf("round %d: emergency refused with %d connections open: %q", round, DefaultMaxConns, r)
		}
	}
	n := 0
	for _, r := range out.all() {
		if ev, ok := r.Body.(*kestrel.Event); ok && ev.Type == kestrel.EventEmergency {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("emergencies emitted: %d, want 3", n)
	}
	if st := srv.Stats(); st.Evicted == 0 || st.Refused != 0 {
		t.Fatalf("stats %+v: want evictions and no refusals", st)
	}
}

// Blank lines are not events: they do not keep a connection open.
func TestBlankLinesDoNotResetIdleTimer(t *testing.T) {
	path, _, _ := start(t, Options{IdleTimeout: 300 * time.Millisecond})
	c := dial(t, path)
	stop := time.Now().Add(5 * time.Second)
	for time.Now().Before(stop) {
		if _, err := c.c.Write([]byte("\n")); err != nil {
			return // closed by the server: what we want
		}
		c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.r.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // EOF: closed by the server
		}
	}
	t.Fatal("a connection sending only blank lines stayed open 5 s past a 300 ms idle timeout")
}
