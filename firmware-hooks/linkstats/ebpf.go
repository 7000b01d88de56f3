//go:build linux && (amd64 || arm64)

package linkstats

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// ebpfBuilt says this build carries the eBPF programs.
const ebpfBuilt = true

// ebpfReader owns the loaded programs, their map and the tracepoint links.
type ebpfReader struct {
	objs  linkstatsObjects
	links []link.Link
	sock  int // any socket of our namespace, for SIOCGIFINDEX
	once  sync.Once
	err   error
}

// exists reports whether name is an interface in the agent's namespace:
// one ioctl, where net.InterfaceByName would dump every link over netlink.
func (r *ebpfReader) exists(name string) bool {
	req, err := unix.NewIfreq(name)
	if err != nil {
		return false
	}
	// Only ENODEV means absent: on any other failure keep the entry
	// rather than drop real counts.
	return !errors.Is(unix.IoctlIfreq(r.sock, unix.SIOCGIFINDEX, req), unix.ENODEV)
}

// openEBPF loads and attaches both programs: the probe is the real thing,
// so success here means counting has started.
func openEBPF() (counterReader, error) {
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, probe.Unavailable("linkstats", "remove memlock limit", err)
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, probe.Unavailable("linkstats", "open interface query socket", err)
	}
	r := &ebpfReader{sock: sock}
	if err := loadLinkstatsObjects(&r.objs, nil); err != nil {
		unix.Close(sock)
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			err = fmt.Errorf("%w (verifier: %+v)", err, ve)
		}
		return nil, probe.Unavailable("linkstats", "load eBPF programs", err)
	}
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"net_dev_xmit", r.objs.NetDevXmit},
		{"netif_receive_skb", r.objs.NetifReceiveSkb},
	} {
		l, err := link.Tracepoint("net", tp.name, tp.prog, nil)
		if err != nil {
			r.Close()
			return nil, probe.Unavailable("linkstats", "attach tracepoint net:"+tp.name, err)
		}
		r.links = append(r.links, l)
	}
	return r, nil
}

// read sums the CPUs of every entry whose interface exists in the agent's
// network namespace. The tracepoints fire in every namespace: entries for
// names that do not exist here (a test's or a container's veth, an
// interface that went away) are deleted, so that the 1024-entry map never
// fills up and the report covers what /proc/net/dev would.
func (r *ebpfReader) read() (map[string]counters, error) {
	out := make(map[string]counters)
	var (
		key   linkstatsLinkKey
		vals  []linkstatsLinkCounts // one per possible CPU
		stale []linkstatsLinkKey
	)
	it := r.objs.LinkStats.Iterate()
	for it.Next(&key, &vals) {
		name := cString(key.Name[:])
		if !r.exists(name) {
			stale = append(stale, key)
			continue
		}
		var c counters
		for _, v := range vals {
			c.RxBytes += v.RxBytes
			c.RxPackets += v.RxPackets
			c.TxBytes += v.TxBytes
			c.TxPackets += v.TxPackets
			c.Drops += v.TxDrops
		}
		out[name] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate link_stats map: %w", err)
	}
	for _, k := range stale {
		// ErrKeyNotExist: the entry went between the walk and now; fine.
		if err := r.objs.LinkStats.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("prune link_stats map: %w", err)
		}
	}
	return out, nil
}

func (r *ebpfReader) Close() error {
	r.once.Do(func() {
		for _, l := range r.links {
			r.err = errors.Join(r.err, l.Close())
		}
		r.err = errors.Join(r.err, r.objs.Close(), unix.Close(r.sock))
	})
	return r.err
}

func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
