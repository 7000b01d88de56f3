package gpssim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const log = "# header\n$GPZDA,193223.00,23,12,2007,00,00*69\r\n$GPZDA,193224.00,23,12,2007,00,00*6E\n"

func setBaud(t *testing.T, f *os.File, speed uint32) {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Cflag &^= unix.CBAUD
	tio.Cflag |= speed
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
}

// read collects what arrives on the slave for a while.
func read(t *testing.T, f *os.File, d time.Duration) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 512)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
	}
	return out
}

func TestGarbageAtWrongBaudAndHangup(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Log: []byte(log), Baud: 4800, Speed: 0, Loop: true, Link: LinkIn(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.OpenFile(s.Path(), os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	defer wg.Wait()
	defer cancel()

	setBaud(t, f, unix.B9600)
	if got := read(t, f, 200*time.Millisecond); len(got) == 0 || bytes.Contains(got, []byte("$GPZDA")) {
		t.Fatalf("at the wrong speed got %q", got[:min(len(got), 80)])
	}
	setBaud(t, f, unix.B4800)
	time.Sleep(50 * time.Millisecond)
	if got := read(t, f, 200*time.Millisecond); !bytes.Contains(got, []byte("$GPZDA,193224.00,23,12,2007,00,00*6E\r\n")) {
		t.Fatalf("at the right speed got %q", got[:min(len(got), 80)])
	}
	if err := s.Unplug(); err != nil {
		t.Fatal(err)
	}
	f.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	var rerr error
	for rerr == nil {
		_, rerr = f.Read(buf)
	}
	// Linux reports the hangup as EIO, or as end of file once drained.
	if !errors.Is(rerr, syscall.EIO) && !errors.Is(rerr, io.EOF) {
		t.Fatalf("read after unplug: %v, want EIO or EOF", rerr)
	}
	if _, err := os.Lstat(LinkIn(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("by-id link still there after unplug: %v", err)
	}
	if err := s.Replug(); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(LinkIn(dir)); err != nil || target == f.Name() {
		t.Fatalf("link after replug: %q %v", target, err)
	}
}
