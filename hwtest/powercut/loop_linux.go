package powercut

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// loopDev is an image attached to a free loop device (ioctls, no losetup).
type loopDev struct {
	f    *os.File
	Path string
}

func attachLoop(image string) (*loopDev, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop-control: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_FD, int(img.Fd()))
		if errors.Is(err, unix.EBUSY) && try < 50 { // taken by another process meanwhile
			f.Close()
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: LOOP_SET_FD: %w", path, err)
		}
		info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
		if err := unix.IoctlLoopSetStatus64(int(f.Fd()), &info); err != nil {
			unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			f.Close()
			return nil, fmt.Errorf("%s: LOOP_SET_STATUS64: %w", path, err)
		}
		return &loopDev{f: f, Path: path}, nil
	}
}

func (l *loopDev) Close() {
	unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	l.f.Close()
}
