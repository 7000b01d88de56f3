package gpssim

import (
	"context"
	"time"
)

// WaitOpen blocks until the code under test has set the receiver's line
// speed on the port (it opened and configured it), so a replay started
// afterwards loses no sentence to garbling.
func (s *Sim) WaitOpen(ctx context.Context) error {
	for {
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		if p != nil {
			if b, err := p.Baud(); err == nil && b == s.cfg.Baud {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
