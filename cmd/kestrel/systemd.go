package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/kestrel-edge/kestrel/agent"
)

// superviseSystemd speaks sd_notify(3) to systemd (Type=notify): READY=1
// once the agent has started its parts, WATCHDOG=1 every half WatchdogSec
// but only while the pipeline is alive (agent.Alive), and STOPPING=1 when
// ctx ends. Outside systemd (no NOTIFY_SOCKET) it does nothing.
func superviseSystemd(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-a.Started():
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	defer daemon.SdNotify(false, daemon.SdNotifyStopping)
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		<-ctx.Done()
		return
	}
	log.Info("systemd watchdog on", "ping_every", interval/2)
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	stalled := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.Alive(); err != nil {
			if !stalled {
				log.Error("pipeline stalled: withholding the watchdog ping, systemd will restart the agent", "err", err)
				stalled = true
			}
			continue
		}
		if stalled {
			log.Warn("pipeline progressing again: watchdog pings resumed")
			stalled = false
		}
		daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	}
}

// journalWriter prefixes each log line with its syslog priority ("<4>" for
// a warning, sd-daemon(3)), which journald reads when the agent's stderr is
// its stream: `journalctl -p warning` then filters as it should.
type journalWriter struct{ w io.Writer }

func (j journalWriter) Write(p []byte) (int, error) {
	prio := "<6>" // info
	head := p[:min(len(p), 48)]
	switch {
	case containsLevel(head, "ERROR"):
		prio = "<3>"
	case containsLevel(head, "WARN"):
		prio = "<4>"
	case containsLevel(head, "DEBUG"):
		prio = "<7>"
	}
	if _, err := io.WriteString(j.w, prio); err != nil {
		return 0, err
	}
	return j.w.Write(p)
}

func containsLevel(head []byte, level string) bool {
	s := string(head)
	return strings.Contains(s, "level="+level) || strings.Contains(s, `"level":"`+level)
}

// toJournal reports whether f is the stream journald connected to us:
// systemd sets JOURNAL_STREAM to its device and inode (systemd.exec(5)).
func toJournal(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok || f == nil {
		return false
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return strconv.FormatUint(uint64(st.Dev), 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// dropTime removes slog's timestamp: journald stamps every line itself.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
