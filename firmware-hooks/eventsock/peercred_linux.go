package eventsock

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

type cred struct{ UID, GID, PID int }

// peerCred asks the kernel who is on the other end: credentials as they
// were when the peer called connect(2), which it cannot forge.
func peerCred(c *net.UnixConn) (cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return cred{}, err
	}
	var (
		uc   *unix.Ucred
		uerr error
	)
	if err := rc.Control(func(fd uintptr) {
		uc, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return cred{}, err
	}
	if uerr != nil {
		return cred{}, fmt.Errorf("SO_PEERCRED: %w", uerr)
	}
	return cred{int(uc.Uid), int(uc.Gid), int(uc.Pid)}, nil
}
