package gpio

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Line flags of enum gpio_v2_line_flag (include/uapi/linux/gpio.h).
// golang.org/x/sys/unix has the v2 structs and ioctl numbers but not these.
const (
	flagUsed               uint64 = 1 << 0
	flagActiveLow          uint64 = 1 << 1
	flagInput              uint64 = 1 << 2
	flagOutput             uint64 = 1 << 3
	flagEdgeRising         uint64 = 1 << 4
	flagEdgeFalling        uint64 = 1 << 5
	flagOpenDrain          uint64 = 1 << 6
	flagOpenSource         uint64 = 1 << 7
	flagBiasPullUp         uint64 = 1 << 8
	flagBiasPullDown       uint64 = 1 << 9
	flagBiasDisabled       uint64 = 1 << 10
	flagEventClockRealtime uint64 = 1 << 11
	flagEventClockHTE      uint64 = 1 << 12
)

// Limits from gpio.h.
const (
	linesMax = 64 // GPIO_V2_LINES_MAX
	numAttrs = 10 // GPIO_V2_LINE_NUM_ATTRS_MAX
	eventSz  = int(unsafe.Sizeof(unix.GPIOV2LineEvent{}))
)

// lineRequester is the ioctl boundary: one open GPIO chip.
type lineRequester interface {
	// requestLines is GPIO_V2_GET_LINE_IOCTL; it fills req.Fd.
	requestLines(req *unix.GPIOV2LineRequest) (lineHandle, error)
	Close() error
}

// lineHandle is the fd returned by a line request.
type lineHandle interface {
	// values is GPIO_V2_LINE_GET_VALUES_IOCTL.
	values(v *unix.GPIOV2LineValues) error
	// readEvents is read(2) of struct gpio_v2_line_event records. It
	// blocks until at least one arrives; Close unblocks it with an error.
	readEvents(buf []unix.GPIOV2LineEvent) (int, error)
	Close() error
}

// chipOpener opens a chip by device path.
type chipOpener func(path string) (lineRequester, error)

// openChardev opens a real /dev/gpiochipN.
func openChardev(path string) (lineRequester, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &chardev{fd: fd, path: path}, nil
}

type chardev struct {
	fd   int
	path string
}

func (c *chardev) requestLines(req *unix.GPIOV2LineRequest) (lineHandle, error) {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), unix.GPIO_V2_GET_LINE_IOCTL, uintptr(unsafe.Pointer(req))); errno != 0 {
		return nil, fmt.Errorf("GPIO_V2_GET_LINE_IOCTL on %s: %w", c.path, errno)
	}
	lfd := int(req.Fd)
	// Non-blocking, so the runtime poller owns it and Close unblocks Read.
	if err := unix.SetNonblock(lfd, true); err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("line fd: %w", err)
	}
	return &lineFile{f: os.NewFile(uintptr(lfd), c.path+":lines")}, nil
}

func (c *chardev) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

type lineFile struct{ f *os.File }

func (l *lineFile) values(v *unix.GPIOV2LineValues) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.GPIO_V2_LINE_GET_VALUES_IOCTL, uintptr(unsafe.Pointer(v)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return fmt.Errorf("GPIO_V2_LINE_GET_VALUES_IOCTL: %w", errno)
	}
	return nil
}

func (l *lineFile) readEvents(buf []unix.GPIOV2LineEvent) (int, error) {
	if len(buf) == 0 {
		return 0, errors.New("gpio: empty event buffer")
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*eventSz)
	n, err := l.f.Read(b)
	// The kernel only ever returns whole events.
	return n / eventSz, err
}

func (l *lineFile) Close() error { return l.f.Close() }

var (
	_ lineRequester = (*chardev)(nil)
	_ lineHandle    = (*lineFile)(nil)
)
