package fleetctl

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// An agent upgraded from format 1 (one overlay, one high-water for every
// scope) keeps its anti-rollback state: no scope accepts a version at or
// below the old mark, the confirmed overlay stays in force, and the audit
// carries over. Before the migration the file was set aside as corrupt and
// the device started afresh, reopening replay.
func TestStateFormat1Migrates(t *testing.T) {
	priv, pub := testKey(1)
	cfg := deviceConfig(t, "met", "d1", "tcp://127.0.0.1:1883", pub)
	body := "[tracking]\ndistance = 7.0\n"
	v1 := `{"format":1,"high_water":1000,"good":{"version":1000,"scope":"all","body":` + jsonString(body) +
		`,"digest":"x","applied_at":1},"audit_seq":3,"audit":[{"seq":3,"kind":"config","result":"applied"}]}`
	if err := os.WriteFile(cfg.Remote.StateFile, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Options{Current: cfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range m.Audit() {
		if a.Kind == "state" {
			t.Fatalf("format 1 state treated as unreadable: %+v", a)
		}
	}
	if c := m.StartConfig(); c.Tracking.Distance != 7 {
		t.Fatalf("the confirmed format-1 overlay is not in force: distance %v", c.Tracking.Distance)
	}
	bus := newMemBus()
	door := newTestDoor(m.StartConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	// The manager writes its state until Run returns: wait for it before
	// the test's directory is removed.
	defer func() { cancel(); <-done }()
	m.Attach(door, bus)
	// An old config (version 999) on another scope: refused by the floor.
	old, _ := fleet.SignConfig(priv, fleet.Device("met", "d1"), 999, []byte("[tracking]\ndistance = 1.0\n"))
	bus.deliver("kestrel/v1/met/d1/config/desired", old)
	newer, _ := fleet.SignConfig(priv, fleet.Device("met", "d1"), 1001, []byte("[tracking]\ndistance = 3.0\n"))
	bus.deliver("kestrel/v1/met/d1/config/desired", newer)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if running, _ := door.applied(); running.Tracking.Distance == 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	running, _ := door.applied()
	if running.Tracking.Distance != 3 {
		t.Fatalf("distance %v: the newer device config did not apply", running.Tracking.Distance)
	}
	for _, a := range m.Audit() {
		if a.Version == 999 && a.Result == fleet.StatusApplied {
			t.Fatal("version 999, below the format-1 high-water, was applied")
		}
	}
}

func jsonString(s string) string {
	b := []byte{'"'}
	for _, r := range s {
		switch r {
		case '\n':
			b = append(b, '\\', 'n')
		case '"':
			b = append(b, '\\', '"')
		default:
			b = append(b, string(r)...)
		}
	}
	return string(append(b, '"'))
}
