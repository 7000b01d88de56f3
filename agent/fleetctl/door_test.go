package fleetctl

import (
	"context"
	"fmt"
	"sync"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// testDoor is the agent's door as these tests need it: it validates,
// diffs, keeps restart keys at their running values as the agent does,
// and runs hook (which may refuse) before making next the running config.
type testDoor struct {
	mu     sync.Mutex
	run    config.Config
	n      int
	hook   func(old, next config.Config) error
	refuse map[string]bool // key paths this door refuses, as a failed part check would
}

var _ Door = (*testDoor)(nil)

func newTestDoor(c config.Config, hook func(old, next config.Config) error) *testDoor {
	return &testDoor{run: config.Clone(c), hook: hook}
}

func (d *testDoor) Config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return config.Clone(d.run)
}

func (d *testDoor) Reload(_ context.Context, next config.Config) ([]config.Change, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	changes := config.Diff(d.run, next)
	in := config.Clone(next)
	for _, c := range changes {
		if d.refuse[c.Path] {
			return changes, &config.FieldError{Path: c.Path, Err: fmt.Errorf("%w: refused by the test door", config.ErrRefused)}
		}
		if c.Applies == config.AtRestart {
			_ = config.CopyKey(&in, d.run, c.Path)
		}
	}
	if d.hook != nil {
		if err := d.hook(d.run, in); err != nil {
			return changes, err
		}
	}
	d.run = in
	d.n++
	return changes, nil
}

func (d *testDoor) applied() (config.Config, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return config.Clone(d.run), d.n
}
