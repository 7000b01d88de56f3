package linkfault

import (
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// SetLoss makes the root qdisc of the interface a netem that drops the
// given fraction of packets (0 to 1) at random (Documentation: tc-netem(8);
// the kernel's struct tc_netem_qopt in include/uapi/linux/pkt_sched.h).
// It is what `tc qdisc replace dev IF root netem loss P%` does, over
// rtnetlink, so the guest needs no tc binary. On lo it applies to both
// directions of every loopback connection.
func SetLoss(ifname string, loss float64) error {
	if loss < 0 || loss > 1 {
		return fmt.Errorf("netem: loss %v is not a fraction", loss)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	// struct tc_netem_qopt: latency, limit, loss, gap, duplicate, jitter.
	qopt := make([]byte, 24)
	binary.NativeEndian.PutUint32(qopt[4:], 1000) // limit in packets, tc's default
	binary.NativeEndian.PutUint32(qopt[8:], uint32(math.Round(loss*math.MaxUint32)))
	msg := tcmsg(ifi.Index)
	msg = appendAttr(msg, unix.TCA_KIND, []byte("netem\x00"))
	msg = appendAttr(msg, unix.TCA_OPTIONS, qopt)
	if err := rtnetlink(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg); err != nil {
		return fmt.Errorf("netem on %s, loss %g%%: %w", ifname, loss*100, err)
	}
	return nil
}

// ClearQdisc removes the interface's root qdisc (the kernel's default
// comes back): `tc qdisc del dev IF root`.
func ClearQdisc(ifname string) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	if err := rtnetlink(unix.RTM_DELQDISC, 0, tcmsg(ifi.Index)); err != nil {
		return fmt.Errorf("remove the root qdisc of %s: %w", ifname, err)
	}
	return nil
}

// tcmsg is struct tcmsg for the root qdisc of ifindex: family, padding,
// ifindex, handle (0: the kernel picks), parent TC_H_ROOT, info.
func tcmsg(ifindex int) []byte {
	b := make([]byte, 20)
	binary.NativeEndian.PutUint32(b[4:], uint32(ifindex))
	binary.NativeEndian.PutUint32(b[12:], 0xFFFFFFFF) // TC_H_ROOT
	return b
}

// appendAttr appends a struct rtattr (length, type, value, padded to 4).
func appendAttr(b []byte, typ uint16, val []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rtnetlink sends one request and waits for its acknowledgement.
func rtnetlink(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}
