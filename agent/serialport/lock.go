package serialport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DefaultLockDir is where UUCP-style lock files live (FHS 3.0, /run/lock;
// /var/lock is a link to it on Debian).
const DefaultLockDir = "/run/lock"

// ErrInUse means another process (or another open in this one) holds the
// port's lock file.
var ErrInUse = errors.New("serial port in use")

// LockPath is the FHS lock file of a device: LCK.. and the device's name
// under /dev, with any further slash as an underscore as lockdev does
// (/dev/ttyUSB0: LCK..ttyUSB0; /dev/pts/3: LCK..pts_3), in dir.
func LockPath(dir, dev string) string {
	name, ok := strings.CutPrefix(filepath.Clean(dev), "/dev/")
	if !ok {
		name = filepath.Base(dev)
	}
	return filepath.Join(dir, "LCK.."+strings.ReplaceAll(name, "/", "_"))
}

// HeldBy returns the pid of the live process whose lock file holds dev, or
// 0 when none does (no lock file, or a stale one).
func HeldBy(dir, dev string) int {
	pid, err := readLock(LockPath(dir, dev))
	if err != nil || !alive(pid) {
		return 0
	}
	return pid
}

// lock takes dev's lock file in dir, the FHS way: create it exclusively
// holding our pid as ten ASCII digits and a newline. A lock file whose
// process is gone is stale and replaced. It returns the function that
// releases the lock. An empty dir, or one that does not exist, takes no
// lock (release is a no-op) and says so in the returned note.
func lock(dir, dev string) (release func(), note string, err error) {
	nop := func() {}
	if dir == "" {
		return nop, "lock files disabled", nil
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nop, "no lock directory " + dir, nil
	}
	path := LockPath(dir, dev)
	content := []byte(fmt.Sprintf("%10d\n", os.Getpid()))
	for attempt := 0; attempt < 3; attempt++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := f.Write(content)
			cerr := f.Close()
			if werr != nil || cerr != nil {
				os.Remove(path)
				return nil, "", fmt.Errorf("serialport: write lock %s: %w", path, errors.Join(werr, cerr))
			}
			return func() { releaseLock(path) }, "", nil
		}
		if !errors.Is(err, os.ErrExist) {
			if errors.Is(err, os.ErrPermission) {
				return nop, "cannot write lock directory " + dir, nil
			}
			return nil, "", fmt.Errorf("serialport: lock %s: %w", path, err)
		}
		pid, rerr := readLock(path)
		if rerr == nil && alive(pid) {
			return nil, "", fmt.Errorf("%w: %s is held by pid %d (%s)", ErrInUse, dev, pid, path)
		}
		// Stale (its process is gone) or unreadable garbage: replace it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("serialport: remove stale lock %s: %w", path, err)
		}
	}
	return nil, "", fmt.Errorf("%w: %s: lock %s keeps reappearing", ErrInUse, dev, path)
}

// releaseLock removes the lock file if it is still ours.
func releaseLock(path string) {
	if pid, err := readLock(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

func readLock(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if len(b) > 64 {
		return 0, fmt.Errorf("serialport: lock %s: not a lock file", path)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("serialport: lock %s: no pid in %q", path, b)
	}
	return pid, nil
}

// alive reports whether a process with this pid exists (EPERM: it exists
// but belongs to someone else).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// lockedPort releases the lock file when the port closes (once).
type lockedPort struct {
	Port
	release func()
}

func (p *lockedPort) Close() error {
	err := p.Port.Close()
	if p.release != nil {
		p.release()
		p.release = nil
	}
	return err
}

// ResetInputBuffer drops what the port has received but not yet read
// (go.bug.st/serial), when the port can.
func (p *lockedPort) ResetInputBuffer() error {
	if r, ok := p.Port.(interface{ ResetInputBuffer() error }); ok {
		return r.ResetInputBuffer()
	}
	return nil
}
