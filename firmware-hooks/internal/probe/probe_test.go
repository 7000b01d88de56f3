package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestUnavailableMessages(t *testing.T) {
	for _, tc := range []struct {
		cause error
		want  string
	}{
		{fmt.Errorf("load program: %w", syscall.EPERM), "needs root, or CAP_BPF and CAP_PERFMON"},
		{ErrUnsupported, "ebpf: not supported on "},
	} {
		err := Unavailable("linkstats", "load", tc.cause)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.cause) {
			t.Errorf("%v: does not wrap both ErrUnavailable and its cause", err)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "linkstats: load: ") {
			t.Errorf("message %q, want it to contain %q", err, tc.want)
		}
	}
	err := Unavailable("execaudit", "attach", fmt.Errorf("tracepoint: %w", os.ErrNotExist))
	if TracefsMounted() && !strings.Contains(err.Error(), "lacks this tracepoint") ||
		!TracefsMounted() && !strings.Contains(err.Error(), "mount -t tracefs") {
		t.Errorf("message %q", err)
	}
}
