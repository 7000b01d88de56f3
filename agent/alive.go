package agent

import (
	"errors"
	"fmt"
	"time"
)

// Started is closed once Run has opened the session and started every
// configured part: systemd's READY=1.
func (a *Agent) Started() <-chan struct{} { return a.startedCh }

// Alive reports whether the pipeline makes progress, for the systemd
// watchdog (which is fed only while it returns nil, never from a bare
// timer): the spool's group-commit loop has finished a round within
// 3 sync intervals plus a second (a hung fsync or a frozen filesystem
// stops it), and the agent's lock is free within a second (a deadlock).
func (a *Agent) Alive() error {
	if a.closed.Load() {
		return ErrClosed
	}
	bound := 3*a.Config().Spool.SyncInterval.Duration + time.Second
	if age := a.spool.CommitLoopAge(); age > bound {
		return fmt.Errorf("spool commit loop has not finished a round for %s (bound %s): storage stuck?", age.Round(100*time.Millisecond), bound)
	}
	got := make(chan struct{})
	go func() {
		a.mu.Lock()
		a.mu.Unlock() //nolint:staticcheck // an empty critical section is the probe
		close(got)
	}()
	select {
	case <-got:
	case <-time.After(time.Second):
		return errors.New("the agent's lock has been held for over 1s")
	}
	return nil
}
