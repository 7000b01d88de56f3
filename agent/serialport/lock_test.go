package serialport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

func TestLockFile(t *testing.T) {
	p, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dir := t.TempDir()
	cfg := Config{Path: p.Path, Baud: 9600, LockDir: dir}
	lockPath := LockPath(dir, p.Path)

	port, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(lockPath)
	if err != nil || string(b) != fmt.Sprintf("%10d\n", os.Getpid()) {
		t.Fatalf("lock file %s: %q, %v; want our pid in the FHS format", lockPath, b, err)
	}
	if HeldBy(dir, p.Path) != os.Getpid() {
		t.Fatal("HeldBy does not name us")
	}
	// A second open, even from the same process, is refused before it
	// touches the port.
	if _, err := Open(context.Background(), cfg); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	port.Close()
	port.Close() // safe twice
	if _, err := os.Stat(lockPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left after close: %v", err)
	}

	// A stale lock (its process is gone) is replaced.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(lockPath, []byte(fmt.Sprintf("%10d\n", dead.Process.Pid)), 0o644)
	port, err = Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("stale lock not replaced: %v", err)
	}
	port.Close()

	// Garbage in a lock file is not a holder.
	os.WriteFile(lockPath, []byte("not a pid"), 0o644)
	if port, err = Open(context.Background(), cfg); err != nil {
		t.Fatalf("garbage lock not replaced: %v", err)
	}
	port.Close()

	// No lock directory: opens without a lock file.
	cfg.LockDir = filepath.Join(dir, "absent")
	if port, err = Open(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	port.Close()
}
