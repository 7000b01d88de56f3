package agent_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

func writeConfig(t *testing.T, path string, c config.Config) {
	t.Helper()
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReloadAppliesLiveOrRejectsWhole is SIGHUP's contract: a change that
// can be applied live is, and a change touching any key that cannot
// (spool.dir) is rejected whole, leaving the running config as it was.
func TestReloadAppliesLiveOrRejectsWhole(t *testing.T) {
	b := broker.StartMochi(t)
	cfg := testConfig(t, b.URL(), "")
	path := filepath.Join(t.TempDir(), "kestrel.toml")
	writeConfig(t, path, cfg)
	loaded, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(loaded, agent.Options{Logger: slog.New(slog.DiscardHandler), ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	live := loaded
	live.Tracking.MinInterval = config.D(5 * time.Second)
	live.Broker.BatchMax = 7
	writeConfig(t, path, live)
	changed, err := a.Reload(ctx)
	if err != nil {
		t.Fatalf("live change rejected: %v", err)
	}
	if got := a.Config(); got.Tracking.MinInterval.Duration != 5*time.Second || got.Broker.BatchMax != 7 {
		t.Fatalf("reload reported %v but the running config is %+v", changed, got.Tracking)
	}

	mixed := live
	mixed.Tracking.MinInterval = config.D(9 * time.Second)
	mixed.Spool.Dir = filepath.Join(t.TempDir(), "elsewhere")
	writeConfig(t, path, mixed)
	if _, err := a.Reload(ctx); !errors.Is(err, config.ErrNotLive) {
		t.Fatalf("reload with spool.dir changed: %v, want ErrNotLive", err)
	}
	if got := a.Config(); got.Tracking.MinInterval.Duration != 5*time.Second || got.Spool.Dir != loaded.Spool.Dir {
		t.Fatalf("a rejected reload changed the running config: %+v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
