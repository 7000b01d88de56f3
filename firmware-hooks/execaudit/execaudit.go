// Package execaudit records every program executed on the device, from the
// sched:sched_process_exec tracepoint (execaudit.c), and raises a security
// event for each one that is not on the configured allow-list.
//
// It has no fallback: where the kernel or the architecture refuses eBPF, New
// returns an error wrapping ErrUnavailable and the agent reports the audit
// as unavailable in its state message.
package execaudit

import (
	"fmt"
	"path"
	"strings"

	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// ErrUnavailable is wrapped by New's error when the kernel, the architecture
// or missing privileges refuse the hook.
var ErrUnavailable = probe.ErrUnavailable

// ErrUnsupported is the cause on architectures without eBPF support.
var ErrUnsupported = probe.ErrUnsupported

// DefaultAllow is a starting allow-list for a Debian-like image: the system
// program directories. Firmware images should list their own.
var DefaultAllow = []string{"/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/usr/lib/", "/usr/libexec/"}

// pathLen is PATH_LEN in execaudit.c: a path that fills it was cut short.
const pathLen = 512

// AllowList says which executed paths are expected. An entry ending in '/'
// allows everything below that directory; any other entry is an exact path.
// Paths are compared after path.Clean, so "/usr/bin/../../tmp/x" is not
// under "/usr/bin/". A path that is not absolute (execve("./x") from some
// directory) or that was truncated never matches: the audit fails closed.
type AllowList struct {
	exact    map[string]bool
	prefixes []string
}

// NewAllowList checks the entries: each must be absolute.
func NewAllowList(entries []string) (AllowList, error) {
	a := AllowList{exact: make(map[string]bool)}
	for _, e := range entries {
		if !strings.HasPrefix(e, "/") {
			return AllowList{}, fmt.Errorf("exec allow-list entry %q: not an absolute path", e)
		}
		if strings.HasSuffix(e, "/") {
			a.prefixes = append(a.prefixes, path.Clean(e)+"/")
			continue
		}
		a.exact[path.Clean(e)] = true
	}
	return a, nil
}

// Allowed reports whether p is on the list.
func (a AllowList) Allowed(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	p = path.Clean(p)
	if a.exact[p] {
		return true
	}
	for _, pre := range a.prefixes {
		if pre == "//" || strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}
