package mqtt

import (
	"sync"
	"time"
)

// pacer spreads bytes over time at rate bytes per second, for narrowband
// links. It keeps the time at which the link is next free; events are sent
// regardless and push that time back, so telemetry pays for them.
type pacer struct {
	mu   sync.Mutex
	rate int
	free time.Time
}

// wait returns how long to hold before sending now; 0 means go.
func (p *pacer) wait(now time.Time) time.Duration {
	if p == nil || p.rate <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.free) {
		return p.free.Sub(now)
	}
	return 0
}

// freeAt is when the link will have carried everything booked so far (the
// zero time without a rate).
func (p *pacer) freeAt() time.Time {
	if p == nil || p.rate <= 0 {
		return time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.free
}

// spend books n bytes sent at now.
func (p *pacer) spend(now time.Time, n int) {
	if p == nil || p.rate <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free.Before(now) {
		p.free = now
	}
	p.free = p.free.Add(time.Duration(int64(n) * int64(time.Second) / int64(p.rate)))
}
