//go:build linux && (amd64 || arm64)

package execaudit

import (
	"context"
	"os/exec"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// BenchmarkExec runs /bin/true per iteration, without and with the audit
// attached and drained; the audited case also reports the kernel's measure
// of the program's run time per exec (BPF_ENABLE_STATS).
func BenchmarkExec(b *testing.B) {
	run := func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", run)
	b.Run("audited", func(b *testing.B) {
		s := newSource(b, DefaultAllow)
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			b.Skipf("BPF_ENABLE_STATS: %v", err)
		}
		defer stats.Close()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { s.Run(ctx, func(kestrel.Record) {}) })
		defer func() { cancel(); wg.Wait() }()
		st0, _ := s.objs.SchedProcessExec.Stats()
		run(b)
		st1, err := s.objs.SchedProcessExec.Stats()
		if err == nil && st1.RunCount > st0.RunCount {
			b.ReportMetric(float64(st1.Runtime-st0.Runtime)/float64(st1.RunCount-st0.RunCount), "ns/prog-run")
		}
	})
}
