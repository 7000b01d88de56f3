package fleetsim

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Mosquitto is Debian's mosquitto as a process with persistence on, for
// the runs that restart it: on a clean stop (SIGTERM) it saves every
// persistent session and its queued messages, and loads them on start.
type Mosquitto struct {
	Addr string
	dir  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// MosquittoConf is the broker configuration the platform's guarantee
// needs (docs/platform.md): persistence, an unbounded queue for a
// persistent session that is away, and an in-flight window wide enough for
// one transaction's batch.
const MosquittoConf = `persistence true
autosave_interval 60
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
allow_anonymous true
`

// StartMosquitto starts mosquitto on a free loopback port with its files
// in dir.
func StartMosquitto(dir string) (*Mosquitto, error) {
	if _, err := mosquittoBin(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := strings.Cut(addr, ":")
	m := &Mosquitto{Addr: addr, dir: dir, conf: filepath.Join(dir, "mosquitto.conf")}
	c := fmt.Sprintf("listener %s 127.0.0.1\npersistence_location %s/\nlog_dest file %s\n", port, dir, filepath.Join(dir, "mosquitto.log")) + MosquittoConf
	if os.Geteuid() == 0 {
		c += "user root\n"
	}
	if err := os.WriteFile(m.conf, []byte(c), 0o600); err != nil {
		return nil, err
	}
	return m, m.Start()
}

// mosquittoBin finds Debian's mosquitto (in /usr/sbin, often not on PATH).
func mosquittoBin() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		return "", fmt.Errorf("mosquitto not installed (Debian package mosquitto): %w", err)
	}
	return "/usr/sbin/mosquitto", nil
}

// URL is the broker's tcp:// URL.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr }

// Start starts the process (again) on the same port.
func (m *Mosquitto) Start() error {
	bin, err := mosquittoBin()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", m.conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(m.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(m.done)
	return waitTCP(m.Addr, 10*time.Second, m.done)
}

// Stop stops the broker cleanly (SIGTERM: it saves its persistence file).
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Restart stops the broker cleanly and starts it again.
func (m *Mosquitto) Restart() error {
	m.Stop()
	return m.Start()
}

func waitTCP(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("process exited before listening on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Serve is one "kestrel-platform serve" process.
type Serve struct {
	Bin  string   // the built binary
	Args []string // after "serve"
	Log  string   // stderr goes here (appended)
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the process.
func (s *Serve) Start() error {
	cmd := exec.Command(s.Bin, append([]string{"serve"}, s.Args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(s.done)
	return nil
}

// Kill sends SIGKILL and waits for the process to die.
func (s *Serve) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Stop sends SIGTERM and waits.
func (s *Serve) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// WaitHealthy polls a serve's http://ADDR/healthz until it answers 200
// (database reachable, broker session subscribed).
func WaitHealthy(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serve on %s not healthy after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Exited reports whether the process has ended on its own.
func (s *Serve) Exited() bool {
	if s.cmd == nil {
		return true
	}
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
