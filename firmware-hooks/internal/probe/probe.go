// Package probe holds what the eBPF hooks share when they find out whether
// the kernel lets them run: the sentinel errors callers branch on, the
// translation of kernel refusals into messages a fitter can act on, and the
// tracefs mount the tracepoint attach needs.
package probe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// ErrUnavailable is wrapped by every error that means "the kernel, the
// architecture or our privileges refuse this hook": the agent runs on
// without it and says so in its state message.
var ErrUnavailable = errors.New("hook unavailable")

// ErrUnsupported is the cause on architectures cilium/ebpf does not support
// (32-bit ARM among them); it is always wrapped together with ErrUnavailable.
var ErrUnsupported = errors.New("ebpf: not supported on " + runtime.GOOS + "/" + runtime.GOARCH)

// TracefsDir is where tracepoint IDs are looked up. cilium/ebpf also tries
// /sys/kernel/debug/tracing.
const TracefsDir = "/sys/kernel/tracing"

// TracefsMounted reports whether tracefs is mounted at TracefsDir or under
// debugfs, where the tracepoint attach looks for event IDs.
func TracefsMounted() bool {
	for _, d := range []string{TracefsDir, "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(d + "/events"); err == nil {
			return true
		}
	}
	return false
}

// Unavailable wraps cause so that errors.Is(err, ErrUnavailable) holds and
// the message says what to do about it.
func Unavailable(hook, step string, cause error) error {
	hint := ""
	switch {
	case errors.Is(cause, ErrUnsupported):
	case errors.Is(cause, syscall.EPERM), errors.Is(cause, syscall.EACCES):
		hint = " (needs root, or CAP_BPF and CAP_PERFMON)"
	case errors.Is(cause, os.ErrNotExist) && !TracefsMounted():
		hint = " (tracefs is not mounted: mount -t tracefs tracefs " + TracefsDir + ")"
	case errors.Is(cause, os.ErrNotExist):
		hint = " (the kernel lacks this tracepoint)"
	}
	return &unavailableError{msg: fmt.Sprintf("%s: %s: %v%s", hook, step, cause, hint), cause: cause}
}

type unavailableError struct {
	msg   string
	cause error
}

func (e *unavailableError) Error() string { return e.msg }

func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }
