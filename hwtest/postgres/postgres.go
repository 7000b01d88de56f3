// Package postgres runs Debian's PostgreSQL server for tests: initdb into a
// fresh directory as the postgres user (when the test runs as root), a
// server on a free loopback port, stopped and removed when the test ends. A
// test skips, saying why, only when the server binaries are absent.
package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// BinDir is where Debian's postgresql-15 puts the server binaries; the
// environment variable KESTREL_PG_BIN overrides it.
var BinDir = "/usr/lib/postgresql/15/bin"

// Server is one running PostgreSQL cluster.
type Server struct {
	dir  string
	port int
	cred *syscall.Credential

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

func binDir() string {
	if d := os.Getenv("KESTREL_PG_BIN"); d != "" {
		return d
	}
	return BinDir
}

// Available says why PostgreSQL cannot run here, or nil.
func Available() error {
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(binDir(), b)); err != nil {
			return fmt.Errorf("PostgreSQL server binary %s not found (Debian package postgresql-15): %w", b, err)
		}
	}
	return nil
}

// Start initialises and starts a cluster, or skips the test when the
// binaries are absent; it is removed when the test ends. Settings are extra
// postgresql.conf lines ("fsync = off").
func Start(t testing.TB, settings ...string) *Server {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	s, err := New(settings...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New initialises and starts a cluster; Close stops and removes it. For a
// server shared by a package's tests (TestMain).
func New(settings ...string) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kestrel-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: run it and the server as postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("running as root and there is no postgres user: %w", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
	}
	data := filepath.Join(dir, "data")
	init := exec.Command(filepath.Join(binDir(), "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	init.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := init.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	conf := "listen_addresses = '127.0.0.1'\nunix_socket_directories = '" + dir + "'\nmax_connections = 100\nshared_buffers = 64MB\n"
	for _, kv := range settings {
		conf += kv + "\n"
	}
	auto := filepath.Join(data, "postgresql.auto.conf")
	if err := os.WriteFile(auto, []byte(conf), 0o600); err != nil {
		return fail(err)
	}
	if s.cred != nil {
		_ = os.Chown(auto, int(s.cred.Uid), int(s.cred.Gid))
	}
	for range 5 {
		if s.port, err = freePort(); err != nil {
			continue
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		return fail(fmt.Errorf("start postgres: %w", err))
	}
	return s, nil
}

// Close stops the server and removes its files. Safe to call twice.
func (s *Server) Close() {
	s.Stop()
	os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(binDir(), "postgres"), "-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(s.port))
	// SIGQUIT (immediate shutdown) if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := sql.Open("pgx", s.url("postgres"))
		if err == nil {
			err = db.Ping()
			db.Close()
		}
		if err == nil {
			break
		}
		select {
		case <-exited:
			logf.Close()
			return fmt.Errorf("postgres exited: %s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			logf.Close()
			return fmt.Errorf("postgres not ready after 30s: %v: %s", err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.cmd, s.log = cmd, logf
	go func() {
		// Reap; Stop waits on the process through its state.
		<-exited
	}()
	return nil
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, " | ")
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// URL is a URL of a new, empty database on the server.
func (s *Server) URL(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("kestrel_%d", time.Now().UnixNano())
	db, err := sql.Open("pgx", s.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s.url(name)
}

// Stop shuts the server down (fast mode: rolls back open transactions,
// checkpoints); Start again with Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	deadline := time.Now().Add(30 * time.Second)
	for s.cmd.Process.Signal(syscall.Signal(0)) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.cmd.Process.Signal(syscall.Signal(0)) == nil {
		_ = s.cmd.Process.Kill()
	}
	s.log.Close()
	s.cmd = nil
}

// Restart stops the server and starts it again on the same port.
func (s *Server) Restart() error {
	s.Stop()
	var err error
	for range 20 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restart postgres: %w", err)
}
