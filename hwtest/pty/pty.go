// Package pty makes Linux pseudo-terminals for device simulators. The
// simulator holds the master side; the code under test opens the slave path
// exactly as it would open a real UART or USB serial device.
package pty

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// PTY is one pseudo-terminal pair.
type PTY struct {
	Master *os.File
	// Path of the slave device, e.g. /dev/pts/7.
	Path string
}

// Open allocates a new pseudo-terminal. The slave is left in raw mode so
// that bytes pass through untouched even before the code under test opens
// it.
func Open() (*PTY, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty number: %w", err)
	}
	p := &PTY{Master: os.NewFile(uintptr(fd), "/dev/ptmx"), Path: "/dev/pts/" + strconv.Itoa(n)}
	if err := p.makeRaw(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// makeRaw clears echo and line discipline on the shared termios. On Linux the
// master and slave share one termios, so setting it through the master
// affects the slave.
func (p *PTY) makeRaw() error { return MakeRaw(int(p.Master.Fd())) }

// MakeRaw puts the tty open on fd in raw mode, as cfmakeraw(3) does: no
// echo, no line editing or signals, no CR/LF translation, 8 bits.
func MakeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set termios: %w", err)
	}
	return nil
}

// Baud reports the line speed the slave side is currently set to, so a
// simulator can behave like a real UART and send garbage at the wrong speed.
func (p *PTY) Baud() (int, error) {
	t, err := unix.IoctlGetTermios(int(p.Master.Fd()), unix.TCGETS)
	if err != nil {
		return 0, fmt.Errorf("get termios: %w", err)
	}
	if b, ok := speeds[t.Cflag&unix.CBAUD]; ok {
		return b, nil
	}
	if t.Ospeed != 0 {
		return int(t.Ospeed), nil
	}
	return 0, errors.New("unknown line speed")
}

var speeds = map[uint32]int{
	unix.B1200: 1200, unix.B2400: 2400, unix.B4800: 4800, unix.B9600: 9600,
	unix.B19200: 19200, unix.B38400: 38400, unix.B57600: 57600,
	unix.B115200: 115200, unix.B230400: 230400, unix.B460800: 460800,
}

// Write sends bytes to whoever has the slave open.
func (p *PTY) Write(b []byte) (int, error) { return p.Master.Write(b) }

// Read receives bytes written to the slave.
func (p *PTY) Read(b []byte) (int, error) { return p.Master.Read(b) }

// SetReadDeadline bounds the next Read on the master.
func (p *PTY) SetReadDeadline(t time.Time) error { return p.Master.SetReadDeadline(t) }

// Close hangs up: the slave side sees EIO on read, as when a USB receiver
// is unplugged. Safe to call twice.
func (p *PTY) Close() error {
	err := p.Master.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
