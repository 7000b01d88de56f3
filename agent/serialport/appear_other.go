//go:build !linux

package serialport

import (
	"context"
	"time"
)

// waitAppear waits d or until ctx ends: without inotify the replug poll
// (Config.ReplugPoll) is what bounds a reopen.
func waitAppear(ctx context.Context, _ string, _ bool, d time.Duration) (bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
