package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MosquittoPath finds the mosquitto binary (Debian installs it in
// /usr/sbin, which a test's PATH may lack).
func MosquittoPath() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mosquitto not found in PATH or /usr/sbin (apt-get install mosquitto)")
}

// StartMosquitto runs `mosquitto -c CONF` on a free 127.0.0.1 port, and
// skips the test if the binary is absent. The broker keeps a persistence
// database (for observers' sessions) that is written only when an
// observer subscribes, so Kill loses everything else, as a real crash
// would. It is killed when the test ends.
func StartMosquitto(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	bin, err := MosquittoPath()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	b := &Broker{t: t, kind: "mosquitto"}
	for _, o := range opts {
		o(&b.cfg)
	}
	m := &mosqImpl{b: b, bin: bin, dir: t.TempDir()}
	b.impl = m
	for range 5 {
		if b.addr, err = freeAddr(); err != nil {
			continue
		}
		if err = m.writeConf(); err != nil {
			break
		}
		if err = m.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	b.running = true
	t.Cleanup(b.Kill)
	return b
}

type mosqImpl struct {
	b    *Broker
	bin  string
	dir  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	nobs int
}

func (m *mosqImpl) writeConf() error {
	_, port, _ := strings.Cut(m.b.addr, ":")
	var c strings.Builder
	fmt.Fprintf(&c, "listener %s 127.0.0.1\n", port)
	c.WriteString("allow_anonymous true\n")
	fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 86400\n", m.dir)
	// Forward at once, queue without limit: an observer must not lose
	// what the publisher was told is delivered.
	c.WriteString("max_inflight_messages 0\nmax_queued_messages 0\nqueue_qos0_messages true\n")
	fmt.Fprintf(&c, "log_dest file %s\n", filepath.Join(m.dir, "mosquitto.log"))
	c.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to user "mosquitto", which cannot
		// read the 0600 key files the test wrote.
		c.WriteString("user root\n")
	}
	if ca := m.b.cfg.ca; ca != nil {
		fmt.Fprintf(&c, "cafile %s\ncertfile %s\nkeyfile %s\n", ca.CAFile, ca.ServerCert, ca.ServerKey)
		c.WriteString("require_certificate true\ntls_version tlsv1.2\n")
	}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	return os.WriteFile(m.conf, []byte(c.String()), 0o600)
}

func (m *mosqImpl) start() error {
	cmd := exec.Command(m.bin, "-c", m.conf)
	logf, err := os.OpenFile(filepath.Join(m.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("exec %s: %w", m.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	m.cmd, m.done = cmd, done
	alive := func() error {
		select {
		case <-done:
			return fmt.Errorf("mosquitto exited: %s", m.logTail())
		default:
			return nil
		}
	}
	if err := waitListening(m.b.addr, 5*time.Second, alive); err != nil {
		m.kill()
		return err
	}
	return nil
}

func (m *mosqImpl) logTail() string {
	var out []string
	for _, f := range []string{"stderr.log", "mosquitto.log"} {
		b, _ := os.ReadFile(filepath.Join(m.dir, f))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		out = append(out, lines...)
	}
	return strings.Join(out, " | ")
}

func (m *mosqImpl) kill() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		m.b.t.Errorf("mosquitto pid %d did not die after SIGKILL", m.cmd.Process.Pid)
	}
	m.cmd = nil
}

// PID is mosquitto's process id (0 while killed).
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.impl.(*mosqImpl); ok && m.cmd != nil {
		return m.cmd.Process.Pid
	}
	return 0
}

// observe subscribes a persistent-session client (see rawSub) and has
// mosquitto save its database, so the subscription survives Kill and
// Restart and what arrives meanwhile is queued for it.
func (m *mosqImpl) observe(o *Observer) {
	t := m.b.t
	m.nobs++
	id := fmt.Sprintf("hwtest-observer-%d", m.nobs)
	var tc *tls.Config
	if m.b.cfg.ca != nil {
		tc = m.b.cfg.ca.ClientTLS(t)
	}
	sub, err := startRawSub(m.b.addr, tc, id, o.filter, func(msg Message) {
		if Match(o.filter, msg.Topic) {
			o.add(msg)
		}
	})
	if err != nil {
		t.Fatalf("observer on %s: %v", m.b.URL(), err)
	}
	t.Cleanup(sub.close)
	db := filepath.Join(m.dir, "mosquitto.db")
	before, _ := os.Stat(db)
	_ = m.cmd.Process.Signal(syscall.SIGUSR1) // mosquitto: write the persistence database now
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.Stat(db)
		if err == nil && (before == nil || !st.ModTime().Equal(before.ModTime())) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not save its database after SIGUSR1: %s", m.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
