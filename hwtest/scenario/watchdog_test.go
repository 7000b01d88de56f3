package scenario

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/loopfs"
)

// notifySocket is systemd's end of sd_notify(3): it records what the agent
// says, with the time.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	n := &notifySocket{path: filepath.Join(dir, "notify.sock")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

// count is the number of messages containing s since t.
func (n *notifySocket) count(s string, since time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, m := range n.msgs {
		if m.at.After(since) && strings.Contains(m.text, s) {
			k++
		}
	}
	return k
}

// TestWatchdogStopsOnStuckPipeline runs the real agent under a fake
// systemd (NOTIFY_SOCKET, WATCHDOG_USEC) with its spool on an ext4 that the
// test then freezes: the group commit blocks in the kernel as it would on
// a hung eMMC. The agent must say READY=1, ping while healthy, stop pinging
// while stuck (so that systemd restarts it), and ping again once thawed.
func TestWatchdogStopsOnStuckPipeline(t *testing.T) {
	cmd := command(t)
	mnt, _ := loopfs.Ext4(t, "64M")
	nmea, fixes := track(t, "visnjan-car")
	e := New(t, Options{Command: cmd, Track: nmea, Fixes: fixes, Speed: 10, Loop: true,
		Edit: func(c *config.Config) { c.Spool.Dir = filepath.Join(mnt, "spool") }})
	n := listenNotify(t, e.Dir)
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "1000000") // ping every 500 ms
	ctx := timeout(t, 2*time.Minute)
	e.Start()
	e.StartReplay(ctx)
	e.WaitFor(ctx, "positions", atLeast(5))
	if n.count("READY=1", time.Time{}) != 1 {
		t.Fatal("no READY=1")
	}
	healthy := time.Now()
	time.Sleep(2 * time.Second)
	if k := n.count("WATCHDOG=1", healthy); k < 2 {
		t.Fatalf("%d watchdog pings in 2 s of a healthy pipeline, want about 4", k)
	}

	if out, err := exec.Command("fsfreeze", "--freeze", mnt).CombinedOutput(); err != nil {
		t.Skipf("fsfreeze: %v %s", err, out)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			exec.Command("fsfreeze", "--unfreeze", mnt).Run()
			thawed = true
		}
	}
	defer thaw()
	// Detection takes up to 3 sync intervals plus a second (1.6 s here)
	// after the last round; then no ping for the rest of the window.
	time.Sleep(3 * time.Second)
	stuck := time.Now()
	time.Sleep(3 * time.Second)
	if k := n.count("WATCHDOG=1", stuck); k != 0 {
		t.Fatalf("%d watchdog pings while the spool's filesystem was frozen: the watchdog is fed by a bare timer", k)
	}
	thaw()
	resumed := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for n.count("WATCHDOG=1", resumed) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n.count("WATCHDOG=1", resumed) == 0 {
		t.Fatal("no watchdog ping after the filesystem thawed")
	}
	e.Stop()
	if n.count("STOPPING=1", time.Time{}) != 1 {
		t.Error("no STOPPING=1 on SIGTERM")
	}
}
