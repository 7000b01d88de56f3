package powercut

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device-mapper ioctls (include/uapi/linux/dm-ioctl.h), issued directly so
// that the guest needs neither dmsetup nor its libraries nor udev. Only
// what the power-cut test uses: create a device with one target, send it a
// message (a log-writes mark), remove it.

const (
	dmIoctlSize = 312 // sizeof(struct dm_ioctl)
	dmSpecSize  = 40  // sizeof(struct dm_target_spec)
	dmBufSize   = 16 << 10

	dmDevCreate  = 3
	dmDevRemove  = 4
	dmDevSuspend = 6
	dmTableLoad  = 9
	dmTargetMsg  = 14
)

func dmReq(cmd uintptr) uintptr {
	return 3<<30 | dmIoctlSize<<16 | 0xfd<<8 | cmd // _IOWR(DM_IOCTL, cmd, struct dm_ioctl)
}

// dmDevice is one mapped device, /dev/dm-N (devtmpfs makes the node).
type dmDevice struct {
	ctl  *os.File
	name string
	Path string
}

// dmCall fills a struct dm_ioctl for name with data after it and issues cmd.
func (d *dmDevice) call(cmd uintptr, flags uint32, data []byte) ([]byte, error) {
	buf := make([]byte, dmBufSize)
	if dmIoctlSize+len(data) > len(buf) {
		return nil, fmt.Errorf("dm: %d bytes of ioctl data", len(data))
	}
	le := binary.LittleEndian
	le.PutUint32(buf[0:], 4) // interface version 4.0.0
	le.PutUint32(buf[12:], uint32(len(buf)))
	le.PutUint32(buf[16:], dmIoctlSize)
	if cmd == dmTableLoad {
		le.PutUint32(buf[20:], 1) // target_count
	}
	le.PutUint32(buf[28:], flags)
	copy(buf[48:48+127], d.name)
	copy(buf[dmIoctlSize:], data)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.ctl.Fd(), dmReq(cmd), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return buf, fmt.Errorf("dm ioctl %d on %s: %w", cmd, d.name, errno)
	}
	return buf, nil
}

// dmCreate creates name with one target over [0, sectors) and activates it.
func dmCreate(name, target string, sectors uint64, params string) (*dmDevice, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("dm: %w", err)
	}
	d := &dmDevice{ctl: ctl, name: name}
	out, err := d.call(dmDevCreate, 0, nil)
	if err != nil {
		ctl.Close()
		return nil, err
	}
	dev := binary.LittleEndian.Uint64(out[40:])
	minor := dev&0xff | dev>>12&0xfff00
	d.Path = fmt.Sprintf("/dev/dm-%d", minor)
	spec := make([]byte, dmSpecSize, dmSpecSize+len(params)+8)
	binary.LittleEndian.PutUint64(spec[8:], sectors)
	copy(spec[24:24+15], target)
	spec = append(spec, params...)
	spec = append(spec, make([]byte, 8-len(spec)%8)...) // NUL-terminated, 8-aligned
	binary.LittleEndian.PutUint32(spec[20:], uint32(len(spec)))
	if _, err := d.call(dmTableLoad, 0, spec); err != nil {
		d.Remove()
		return nil, err
	}
	if _, err := d.call(dmDevSuspend, 0, nil); err != nil { // no DM_SUSPEND_FLAG: resume
		d.Remove()
		return nil, err
	}
	return d, nil
}

// Message sends a target message (for log-writes: "mark LABEL").
func (d *dmDevice) Message(msg string) error {
	data := make([]byte, 8, 8+len(msg)+1)
	data = append(append(data, msg...), 0)
	_, err := d.call(dmTargetMsg, 0, data)
	return err
}

// Remove removes the device (log-writes writes out its log first).
func (d *dmDevice) Remove() error {
	_, err := d.call(dmDevRemove, 0, nil)
	d.ctl.Close()
	return err
}
