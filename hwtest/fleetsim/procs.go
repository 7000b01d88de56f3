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
	p    *proc
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
	if m.p, err = startProc(filepath.Join(m.dir, "stderr.log"), bin, "-c", m.conf); err != nil {
		return err
	}
	return waitTCP(m.Addr, 10*time.Second, m.p.done)
}

// Stop stops the broker cleanly (SIGTERM: it saves its persistence file).
func (m *Mosquitto) Stop() {
	m.p.stop(syscall.SIGTERM)
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
	p    *proc
}

// Start starts the process.
func (s *Serve) Start() error {
	var err error
	s.p, err = startProc(s.Log, s.Bin, append([]string{"serve"}, s.Args...)...)
	return err
}

// Kill sends SIGKILL and waits for the process to die.
func (s *Serve) Kill() { s.p.stop(syscall.SIGKILL) }

// Stop sends SIGTERM and waits.
func (s *Serve) Stop() { s.p.stop(syscall.SIGTERM) }

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
func (s *Serve) Exited() bool { return s.p.exited() }

// proc is a child process with its output appended to a log file. It gets
// SIGKILL if the test binary dies first.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(logPath, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop signals the process and waits for it (SIGKILL after 20 s). Safe on
// a nil or stopped proc.
func (p *proc) stop(sig syscall.Signal) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	if p == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
