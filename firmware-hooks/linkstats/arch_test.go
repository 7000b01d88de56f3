package linkstats

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestDegradesWhereUnsupported runs in the linux/arm build under qemu-arm
// (issue 8): the hook says why it is unavailable, the Source reads
// /proc/net/dev instead, and nothing crashes.
func TestDegradesWhereUnsupported(t *testing.T) {
	if ebpfBuilt {
		t.Skipf("eBPF is built for %s/%s; this test is for the other architectures", runtime.GOOS, runtime.GOARCH)
	}
	s := New(Options{Period: 20 * time.Millisecond})
	if s.Mode() != ModeProcfs {
		t.Fatalf("mode %q", s.Mode())
	}
	r := s.Reason()
	if !errors.Is(r, ErrUnavailable) || !errors.Is(r, ErrUnsupported) ||
		!strings.Contains(r.Error(), "ebpf: not supported on linux/arm") {
		t.Errorf("reason %v", r)
	}
	t.Logf("linkstats reason: %v", r)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx, func(rec kestrel.Record) {
		if u := rec.Body.(*kestrel.LinkUsage); u.Source != ModeProcfs {
			t.Errorf("source %q", u.Source)
		}
	}); err != nil {
		t.Errorf("run on the real /proc/net/dev: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
