package probe

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountTracefs mounts tracefs at TracefsDir unless a tracefs is already
// reachable. It needs CAP_SYS_ADMIN. Tests call it; operators should rather
// mount it at boot (docs/hooks.md).
func MountTracefs() error {
	if TracefsMounted() {
		return nil
	}
	if err := os.MkdirAll(TracefsDir, 0o755); err != nil {
		return fmt.Errorf("mount tracefs: %w", err)
	}
	if err := unix.Mount("tracefs", TracefsDir, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs at %s: %w", TracefsDir, err)
	}
	return nil
}
