package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// Under journald (JOURNAL_STREAM names our stderr) every line carries its
// syslog priority and no timestamp of its own; elsewhere, neither changes.
func TestJournalPriorities(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	for _, format := range []string{"text", "json"} {
		f.Truncate(0)
		f.Seek(0, 0)
		log := newLogger(stdio{ctx: context.Background(), stderr: f}, config.Log{Level: "debug", Format: format}, new(slog.LevelVar))
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		b, _ := os.ReadFile(f.Name())
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != 4 {
			t.Fatalf("%s: %q", format, lines)
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Contains(l, "time") {
				t.Errorf("%s line %d: %q, want prefix %s and no timestamp", format, i, l, want[i])
			}
		}
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	f.Truncate(0)
	f.Seek(0, 0)
	newLogger(stdio{ctx: context.Background(), stderr: f}, config.Log{Level: "info", Format: "text"}, new(slog.LevelVar)).Warn("w")
	if b, _ := os.ReadFile(f.Name()); strings.HasPrefix(string(b), "<") || !strings.Contains(string(b), "time=") {
		t.Errorf("not journald: %q", b)
	}
}
