//go:build linux && (amd64 || arm64)

package linkstats

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// BenchmarkRead is the cost of one report period's read: the eBPF map walk
// against its peer, parsing the real /proc/net/dev.
func BenchmarkRead(b *testing.B) {
	b.Run("procfs", func(b *testing.B) {
		s := New(Options{ProcfsOnly: true})
		defer s.Close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.r.read(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ebpf", func(b *testing.B) {
		s := benchEBPF(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.r.read(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchEBPF(b *testing.B) *Source {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if err := probe.MountTracefs(); err != nil {
		b.Skip(err)
	}
	s := New(Options{})
	if s.Mode() != ModeEBPF {
		b.Skipf("eBPF unavailable: %v", s.Reason())
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkVethRoundTrip sends one 1000-byte UDP datagram each way over a
// veth pair per iteration, without and with the programs attached; the
// ebpf case also reports the kernel's own measure of the programs' run time
// (BPF_ENABLE_STATS), per run, i.e. per packet per hook.
func BenchmarkVethRoundTrip(b *testing.B) {
	v := newVethPair(b)
	pingPong := newPingPong(b, v)
	b.Run("bare", func(b *testing.B) {
		pingPong(10, 1000)
		b.ResetTimer()
		pingPong(b.N, 1000)
	})
	b.Run("ebpf", func(b *testing.B) {
		s := benchEBPF(b)
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Skipf("BPF_ENABLE_STATS: %v", err)
		}
		defer stats.Close()
		r := s.r.(*ebpfReader)
		progs := []*ebpf.Program{r.objs.NetDevXmit, r.objs.NetifReceiveSkb}
		total := func() (time.Duration, uint64) {
			var d time.Duration
			var n uint64
			for _, p := range progs {
				st, err := p.Stats()
				if err != nil {
					b.Fatal(err)
				}
				d += st.Runtime
				n += st.RunCount
			}
			return d, n
		}
		pingPong(10, 1000)
		d0, n0 := total()
		b.ResetTimer()
		pingPong(b.N, 1000)
		b.StopTimer()
		d1, n1 := total()
		if n1 > n0 {
			b.ReportMetric(float64(d1-d0)/float64(n1-n0), "ns/prog-run")
		}
	})
}
