package lograte

import (
	"sync"
	"time"
)

// DefaultEvery is the interval a zero Limiter uses.
const DefaultEvery = time.Minute

// Limiter decides which occurrences of one kind of warning are logged.
// The zero value logs the first occurrence and then one per DefaultEvery.
// It is safe for concurrent use.
type Limiter struct {
	// Every is the shortest time between two logged occurrences
	// (default DefaultEvery).
	Every time.Duration

	mu     sync.Mutex
	total  uint64
	quiet  uint64 // occurrences not logged since the last logged one
	last   time.Time
	logged bool
}

// Note counts one occurrence at now and reports whether to log it. total
// counts every occurrence so far, this one included; suppressed counts
// those not logged between the previous logged one and this.
func (l *Limiter) Note(now time.Time) (total, suppressed uint64, log bool) {
	every := l.Every
	if every <= 0 {
		every = DefaultEvery
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if l.logged && now.Sub(l.last) < every {
		l.quiet++
		return l.total, 0, false
	}
	suppressed = l.quiet
	l.quiet, l.last, l.logged = 0, now, true
	return l.total, suppressed, true
}
