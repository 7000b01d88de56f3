//go:build !linux

package serialport

import (
	"context"
	"time"
)

// waitAppear waits d or until ctx ends: without inotify the replug poll
// (Config.ReplugPoll) is what bounds a reopen.
func waitAppear(ctx context.Context, _ string, _ bool, d time.Duration) (bool, error) {
	return false, sleep(ctx, d)
}
