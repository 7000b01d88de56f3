//go:build linux && (amd64 || arm64)

package execaudit

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

func newSource(t testing.TB, allow []string) *Source {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load eBPF programs")
	}
	if err := probe.MountTracefs(); err != nil {
		t.Skipf("kernel refuses tracefs: %v", err)
	}
	s, err := New(Options{Allow: allow})
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EPERM):
		t.Skipf("kernel refuses eBPF: %v", err)
	default:
		t.Fatalf("exec audit did not load and attach: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestExecAudit is the acceptance test of issue 8: /bin/true (allowed) is
// audited quietly, a copy of it in a temporary directory raises a security
// event.
func TestExecAudit(t *testing.T) {
	s := newSource(t, []string{"/bin/true", "/usr/bin/"})

	dir := t.TempDir()
	rogue := filepath.Join(dir, "rogue")
	copyFile(t, "/bin/true", rogue)

	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		recs []kestrel.Record
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		if err := s.Run(ctx, func(r kestrel.Record) {
			mu.Lock()
			recs = append(recs, r)
			mu.Unlock()
		}); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	for _, p := range []string{"/bin/true", rogue} {
		if err := exec.Command(p).Run(); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}

	// Other processes on the machine exec too: pick ours out by path and
	// parent.
	find := func() (trueAudit, rogueAudit *kestrel.ExecAudit, sec *kestrel.Record, extraSec int) {
		mu.Lock()
		defer mu.Unlock()
		for i, r := range recs {
			switch b := r.Body.(type) {
			case *kestrel.ExecAudit:
				if b.PPID != uint32(os.Getpid()) {
					continue
				}
				switch b.Path {
				case "/bin/true":
					trueAudit = b
				case rogue:
					rogueAudit = b
				}
			case *kestrel.Event:
				if b.Type == kestrel.EventSecurity && b.Name == "exec" {
					if strings.Contains(b.Text, rogue) {
						sec = &recs[i]
					} else if strings.Contains(b.Text, "/bin/true ") {
						extraSec++
					}
				}
			}
		}
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ta, ra, sec, _ := find()
		if ta != nil && ra != nil && sec != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ta, ra, sec, extra := find()
	if ta == nil || ra == nil {
		t.Fatalf("exec audit records missing: /bin/true %+v, rogue %+v", ta, ra)
	}
	if !ta.Allowed || ra.Allowed {
		t.Errorf("allowed: /bin/true %v, rogue %v", ta.Allowed, ra.Allowed)
	}
	if ra.UID != 0 || ra.PID == 0 || ra.ParentComm == "" {
		t.Errorf("rogue audit: %+v", ra)
	}
	if sec == nil {
		t.Fatal("no security event for the rogue exec")
	}
	if sec.Priority != kestrel.PriorityHigh || sec.Body.(*kestrel.Event).Value != int64(ra.PID) {
		t.Errorf("security event: %+v %+v", sec.Envelope, sec.Body)
	}
	if extra != 0 {
		t.Errorf("%d security events for the allowed /bin/true", extra)
	}
	t.Logf("rogue: %+v", *ra)
}

func TestCloseTwiceAndRunAfterClose(t *testing.T) {
	s := newSource(t, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Run(context.Background(), func(kestrel.Record) {}); err != nil {
		t.Errorf("run after close: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAuditGapReported fills the ring buffer before anyone reads it: the
// execs that found it full must be reported as a security event, not
// silently lost.
func TestAuditGapReported(t *testing.T) {
	s := newSource(t, []string{"/"})
	defer func(d time.Duration) { lostCheck = d }(lostCheck)
	lostCheck = 50 * time.Millisecond
	// 256 KiB / 560-byte records: about 460 fit.
	for i := range 700 {
		if err := exec.Command("/bin/true").Run(); err != nil {
			t.Fatalf("exec %d: %v", i, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu  sync.Mutex
		gap *kestrel.Event
		wg  sync.WaitGroup
	)
	wg.Go(func() {
		s.Run(ctx, func(r kestrel.Record) {
			if ev, ok := r.Body.(*kestrel.Event); ok && ev.Name == "exec_audit_gap" {
				if r.Priority != kestrel.PriorityHigh || ev.Type != kestrel.EventSecurity {
					t.Errorf("gap record %+v %+v", r.Envelope, ev)
				}
				mu.Lock()
				gap = ev
				mu.Unlock()
			}
		})
	})
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		g := gap
		mu.Unlock()
		if g != nil {
			t.Logf("gap: %s", g.Text)
			if g.Value < 700-470 {
				t.Errorf("only %d lost of 700 execs into a ~460-record buffer", g.Value)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no audit gap reported")
}
