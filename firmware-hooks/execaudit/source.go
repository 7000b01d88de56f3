//go:build linux && (amd64 || arm64)

package execaudit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// Options configure a Source.
type Options struct {
	// Allow is the allow-list (see AllowList). Empty means nothing is
	// expected: every exec raises a security event.
	Allow  []string
	Logger *slog.Logger
}

// Source reads exec events from the kernel.
type Source struct {
	allow AllowList
	log   *slog.Logger
	objs  execauditObjects
	tp    link.Link
	rd    *ringbuf.Reader

	closeOnce sync.Once
	closeErr  error
}

// lostCheck is how often Run looks at the in-kernel count of execs that
// found the ring buffer full.
var lostCheck = 5 * time.Second // a variable for tests

// New loads the program and attaches it to sched:sched_process_exec. The
// error wraps ErrUnavailable when the kernel refuses (no BTF for CO-RE, no
// CAP_BPF, no tracefs, unsupported architecture).
func New(opts Options) (*Source, error) {
	allow, err := NewAllowList(opts.Allow)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Source{allow: allow, log: log.With("hook", "execaudit")}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, probe.Unavailable("execaudit", "remove memlock limit", err)
	}
	if err := loadExecauditObjects(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			err = fmt.Errorf("%w (verifier: %+v)", err, ve)
		}
		return nil, probe.Unavailable("execaudit", "load eBPF program", err)
	}
	s.tp, err = link.Tracepoint("sched", "sched_process_exec", s.objs.SchedProcessExec, nil)
	if err != nil {
		s.objs.Close()
		return nil, probe.Unavailable("execaudit", "attach tracepoint sched:sched_process_exec", err)
	}
	s.rd, err = ringbuf.NewReader(s.objs.ExecEvents)
	if err != nil {
		s.tp.Close()
		s.objs.Close()
		return nil, probe.Unavailable("execaudit", "open ring buffer", err)
	}
	return s, nil
}

// Close detaches the program and ends Run. It is safe to call more than
// once.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.rd.Close(), s.tp.Close(), s.objs.Close())
	})
	return s.closeErr
}

// Run emits, for each exec, a Record with an *kestrel.ExecAudit body (Bulk
// when allowed, Normal when not) and, when the path is not allowed, a High
// priority *kestrel.Event of type EventSecurity. Execs lost because the ring
// buffer was full are reported as a security event too: an audit gap. Run
// returns when ctx is done or the Source is closed, and closes the Source.
func (s *Source) Run(ctx context.Context, emit func(kestrel.Record)) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			s.rd.Close() // unblocks Read
		case <-stop:
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
		s.Close()
	}()

	var (
		lostSeen uint64
		rec      ringbuf.Record // reused: ReadInto grows its buffer once
	)
	for {
		s.rd.SetDeadline(time.Now().Add(lostCheck))
		err := s.rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			lostSeen = s.reportLost(lostSeen, emit)
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("execaudit: read ring buffer: %w", err)
		}
		ev, err := decode(rec.RawSample)
		if err != nil {
			s.log.Error("bad exec event from the kernel", "err", err)
			continue
		}
		for _, r := range records(s.allow, ev, time.Now()) {
			emit(r)
		}
	}
}

func (s *Source) reportLost(seen uint64, emit func(kestrel.Record)) uint64 {
	var n uint64
	if err := s.objs.ExecLost.Lookup(uint32(0), &n); err != nil || n <= seen {
		return seen
	}
	s.log.Warn("exec audit lost events: ring buffer full", "lost", n-seen)
	emit(kestrel.Record{
		Envelope: kestrel.Envelope{Time: time.Now().UnixMilli(), Priority: kestrel.PriorityHigh},
		Body: &kestrel.Event{Type: kestrel.EventSecurity, Source: "ebpf", Name: "exec_audit_gap",
			Value: int64(n - seen), Text: fmt.Sprintf("exec audit lost %d events (ring buffer full)", n-seen)},
	})
	return n
}

// decode reads struct exec_event (execaudit.c) in the little-endian layout
// of the only targets this file is built for.
func decode(b []byte) (execEvent, error) {
	const size = 16 + 16 + 16 + pathLen
	if len(b) < size {
		return execEvent{}, fmt.Errorf("exec event of %d bytes, want %d", len(b), size)
	}
	le := binary.LittleEndian
	ev := execEvent{
		PID:        le.Uint32(b[0:]),
		PPID:       le.Uint32(b[4:]),
		UID:        le.Uint32(b[8:]),
		Comm:       cString(b[16:32]),
		ParentComm: cString(b[32:48]),
		Path:       cString(b[48 : 48+pathLen]),
	}
	ev.Truncated = le.Uint32(b[12:]) >= pathLen
	return ev, nil
}
