//go:build linux

package linkstats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// vethPair is a veth pair with one end in a network namespace that the test
// made and tears down.
type vethPair struct {
	ns               string
	hostIf, nsIf     string
	hostAddr, nsAddr net.IP
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newVethPair(t testing.TB) *vethPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	var b [3]byte
	rand.Read(b[:])
	suf := hex.EncodeToString(b[:])
	// A random /30 inside 198.18.0.0/15 (RFC 2544 benchmarking), so that
	// tests running at the same time on this host do not share a route.
	n := mrand.IntN(1 << 15)
	base := net.IPv4(198, 18+byte(n>>14), byte(n>>6), byte(n&63)<<2)
	v := &vethPair{
		ns: "kestrel-test-" + suf, hostIf: "kt" + suf + "h", nsIf: "kt" + suf + "n",
		hostAddr: net.IPv4(base[12], base[13], base[14], base[15]+1),
		nsAddr:   net.IPv4(base[12], base[13], base[14], base[15]+2),
	}
	run(t, "ip", "netns", "add", v.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", v.ns).Run() })
	run(t, "ip", "link", "add", v.hostIf, "type", "veth", "peer", "name", v.nsIf)
	t.Cleanup(func() { exec.Command("ip", "link", "del", v.hostIf).Run() })
	// No IPv6 on the host end: its router and listener chatter is noise.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+v.hostIf+"/disable_ipv6", []byte("1"), 0)
	run(t, "ip", "link", "set", v.nsIf, "netns", v.ns)
	run(t, "ip", "addr", "add", v.hostAddr.String()+"/30", "dev", v.hostIf)
	run(t, "ip", "link", "set", v.hostIf, "up")
	run(t, "ip", "-n", v.ns, "addr", "add", v.nsAddr.String()+"/30", "dev", v.nsIf)
	run(t, "ip", "-n", v.ns, "link", "set", v.nsIf, "up")
	return v
}

// listenUDPInNS opens a UDP socket inside the namespace: a socket stays in
// the namespace it was created in, so only the creating thread has to enter.
func listenUDPInNS(t testing.TB, ns string, addr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	type result struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked: if switching back fails the thread must die with
		// the goroutine rather than serve others from the wrong namespace.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		c, err := net.ListenUDP("udp4", addr)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", ns, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// newPingPong opens a socket at each end; the function it returns sends n
// datagrams of size bytes from the host to the namespace and n back, one
// at a time, so that none is lost to a queue limit.
func newPingPong(t testing.TB, v *vethPair) func(n, size int) {
	t.Helper()
	peer := listenUDPInNS(t, v.ns, &net.UDPAddr{IP: v.nsAddr, Port: 9000})
	host, err := net.DialUDP("udp4", &net.UDPAddr{IP: v.hostAddr}, &net.UDPAddr{IP: v.nsAddr, Port: 9000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	return func(n, size int) {
		t.Helper()
		out := make([]byte, size)
		in := make([]byte, size+1)
		for i := range n {
			if _, err := host.Write(out); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, from, err := peer.ReadFromUDP(in)
			if err != nil || m != size {
				t.Fatalf("ns receive %d: %d bytes, %v", i, m, err)
			}
			if _, err := peer.WriteToUDP(out, from); err != nil {
				t.Fatalf("ns send %d: %v", i, err)
			}
			host.SetReadDeadline(time.Now().Add(5 * time.Second))
			if m, err := host.Read(in); err != nil || m != size {
				t.Fatalf("host receive %d: %d bytes, %v", i, m, err)
			}
		}
	}
}

// collector sums the records a Source emits, per interface.
type collector struct {
	mu  sync.Mutex
	sum map[string]kestrel.LinkUsage
}

func (c *collector) emit(r kestrel.Record) {
	u := r.Body.(*kestrel.LinkUsage)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sum[u.Iface]
	s.Source = u.Source
	s.RxBytes += u.RxBytes
	s.TxBytes += u.TxBytes
	s.RxPackets += u.RxPackets
	s.TxPackets += u.TxPackets
	s.Drops += u.Drops
	c.sum[u.Iface] = s
}

func (c *collector) get(iface string) kestrel.LinkUsage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum[iface]
}

func within(t *testing.T, what string, got, want uint64) {
	t.Helper()
	dev := math.Abs(float64(got)-float64(want)) / float64(want)
	t.Logf("%s: got %d, want %d (%.3f%% off)", what, got, want, 100*dev)
	if dev > 0.05 {
		t.Errorf("%s: got %d, want %d within 5%%", what, got, want)
	}
}

// skipIfKernelRefuses skips when the kernel (not our code) said no.
func skipIfKernelRefuses(t *testing.T, reason error) {
	t.Helper()
	switch {
	case reason == nil:
	case errors.Is(reason, ErrUnsupported), errors.Is(reason, syscall.ENOSYS), errors.Is(reason, syscall.EPERM):
		t.Skipf("kernel refuses eBPF: %v", reason)
	default:
		t.Fatalf("eBPF link counters did not load and attach: %v", reason)
	}
}

// TestVethCounters is the acceptance test of issue 8: real programs on real
// tracepoints count real traffic over a veth pair, and so does the procfs
// fallback, both within 5% of the bytes sent.
func TestVethCounters(t *testing.T) {
	v := newVethPair(t)
	if err := probe.MountTracefs(); err != nil {
		t.Skipf("kernel refuses tracefs: %v", err)
	}
	bpf := New(Options{Period: 50 * time.Millisecond, Ifaces: []string{v.hostIf, v.nsIf}})
	skipIfKernelRefuses(t, bpf.Reason())
	if bpf.Mode() != ModeEBPF {
		t.Fatalf("mode %q", bpf.Mode())
	}
	proc := New(Options{Period: 50 * time.Millisecond, Ifaces: []string{v.hostIf}, ProcfsOnly: true})

	var baselines []chan struct{}
	for _, s := range []*Source{bpf, proc} {
		c := make(chan struct{})
		s.r = &notifyingReader{counterReader: s.r, first: c}
		baselines = append(baselines, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	cb := &collector{sum: map[string]kestrel.LinkUsage{}}
	cp := &collector{sum: map[string]kestrel.LinkUsage{}}
	for _, x := range []struct {
		s *Source
		c *collector
	}{{bpf, cb}, {proc, cp}} {
		wg.Go(func() {
			if err := x.s.Run(ctx, x.c.emit); err != nil {
				t.Errorf("run %s: %v", x.s.Mode(), err)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()

	const n, size = 1000, 1000
	pingPong := newPingPong(t, v)
	for _, c := range baselines {
		<-c // both Sources have their baselines
	}
	pingPong(n, size)

	// On the wire of the host end: Ethernet 14 + IPv4 20 + UDP 8 + payload.
	// eBPF rx starts at the IP header (netif_receive_skb runs after
	// eth_type_trans pulled the Ethernet header); procfs counts it.
	const l2, l3 = 14 + 20 + 8 + size, 20 + 8 + size
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, p := cb.get(v.hostIf), cp.get(v.hostIf)
		if b.TxPackets >= n && b.RxPackets >= n && p.TxPackets >= n && p.RxPackets >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, p := cb.get(v.hostIf), cp.get(v.hostIf)
	if b.Source != ModeEBPF || p.Source != ModeProcfs {
		t.Errorf("sources %q %q", b.Source, p.Source)
	}
	within(t, "ebpf tx bytes", b.TxBytes, n*l2)
	within(t, "ebpf rx bytes", b.RxBytes, n*l3)
	within(t, "ebpf tx packets", b.TxPackets, n)
	within(t, "ebpf rx packets", b.RxPackets, n)
	within(t, "procfs tx bytes", p.TxBytes, n*l2)
	within(t, "procfs rx bytes", p.RxBytes, n*l2)
	within(t, "procfs tx packets", p.TxPackets, n)
	within(t, "procfs rx packets", p.RxPackets, n)
	// The tracepoints see every namespace, but like /proc/net/dev the
	// report covers only the agent's: the far end, asked for by name, is
	// not there.
	if nb := cb.get(v.nsIf); nb != (kestrel.LinkUsage{}) {
		t.Errorf("interface of another namespace reported: %+v", nb)
	}
}
