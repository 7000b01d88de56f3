package mqtt

import (
	"math/rand/v2"
	"time"
)

// backoff draws reconnect delays with "full jitter": uniform in
// [0, min(max, min*2^n)). Spreading the whole interval, not just a margin
// around it, is what keeps a fleet that lost its broker at one instant from
// coming back at one instant.
type backoff struct {
	min, max time.Duration
	n        int
	rand     func(int64) int64
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, rand: rand.Int64N}
}

// next returns the delay before the next attempt and grows the ceiling.
func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.n < 62 {
		if c := b.min << b.n; c > 0 && c < b.max {
			ceil = c
		}
	}
	b.n++
	if ceil <= 0 {
		return 0
	}
	return time.Duration(b.rand(int64(ceil)))
}

// reset starts over after a connection that held.
func (b *backoff) reset() { b.n = 0 }
