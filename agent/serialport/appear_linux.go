package serialport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waitAppear waits d, or until ctx ends (its error), or, when the device
// was absent at the last attempt, until the device node (or the next
// missing directory on its path, such as /dev/serial/by-id) appears in the
// nearest directory that exists: it then reports true at once. The watch
// is inotify(7) on that directory, so waiting costs no wakeups; any
// failure to watch falls back to the plain timer.
func waitAppear(ctx context.Context, path string, absent bool, d time.Duration) (bool, error) {
	if absent {
		if w, err := watchFor(path); err == nil {
			defer w.close()
			if w.present() { // it came while the watch was being set up
				return true, nil
			}
			// The read ends at the deadline, or at once when ctx ends.
			w.f.SetReadDeadline(time.Now().Add(d))
			stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
			defer stop()
			if w.wait() {
				return true, nil
			}
			return false, ctx.Err()
		}
	}
	return false, sleep(ctx, d)
}

// appearWatch is an inotify watch on dir for the entry name.
type appearWatch struct {
	f    *os.File
	dir  string
	name string
}

func watchFor(path string) (*appearWatch, error) {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) {
		return nil, errors.New("relative path")
	}
	// The nearest existing directory above path, and the entry in it that
	// leads to path.
	dir, name := filepath.Dir(path), filepath.Base(path)
	for {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			break
		}
		if dir == "/" {
			return nil, errors.New("no directory to watch")
		}
		dir, name = filepath.Dir(dir), filepath.Base(dir)
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking: reads go through the runtime's poller, and Close
	// wakes a blocked wait.
	return &appearWatch{f: os.NewFile(uintptr(fd), "inotify"), dir: dir, name: name}, nil
}

func (w *appearWatch) present() bool {
	_, err := os.Lstat(filepath.Join(w.dir, w.name))
	return err == nil
}

// wait blocks until an event names the entry (true) or the read deadline
// passes (false).
func (w *appearWatch) wait() bool {
	buf := make([]byte, 4096)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return false
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(ev.Len)
			if end > n {
				break
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
			if name == w.name || ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				return true
			}
			off = end
		}
	}
}

func (w *appearWatch) close() { w.f.Close() }
