package fleetsim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/postgres"
)

// buildNATS builds the nats-server pinned as a tool in go.mod.
func buildNATS(t *testing.T) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

// TestNATSClusterNodeKill runs the platform on a distributed broker: a
// 3-node NATS cluster with JetStream and MQTT. Devices publish to node 1,
// serve reads from node 2 into PostgreSQL, node 3 is killed with SIGKILL
// mid-run and restarted; nothing is lost and no gap stays open.
func TestNATSClusterNodeKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	natsBin := buildNATS(t)
	cl, err := StartNATSCluster(natsBin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	pg := postgres.Start(t, "fsync = off")
	dbURL := pg.URL(t)
	bin := buildServe(t)
	n1, n3 := cl.Nodes[0], cl.Nodes[2]
	// JetStream elects its meta leader and makes the MQTT streams first:
	// startServe waits until serve has subscribed on node 2.
	srv, _ := startServe(t, bin, "tcp://"+cl.Nodes[1].MQTTAddr, dbURL, "nats-platform")
	f, err := Start(context.Background(), Config{Broker: "tcp://" + n1.MQTTAddr, Fleet: "nats", Devices: 10, Rate: 5, BatchAge: 200 * time.Millisecond, EventEvery: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(4 * time.Second)
	cl.Kill(n3)
	time.Sleep(4 * time.Second)
	if err := cl.Start(n3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	f.StopGenerating()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := f.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	verify(t, dbURL, "nats", f)
	if t.Failed() {
		b, _ := os.ReadFile(srv.Log)
		t.Logf("serve: %s\nnode 1: %s", tail(string(b), 20), tail(n1.Log(), 20))
	}
}
