package fleetsim

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/postgres"
	"github.com/kestrel-edge/kestrel/platform"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// buildServe builds cmd/kestrel-platform (with the build tags in
// $KESTREL_PLATFORM_TAGS, for the test of the test).
func buildServe(t *testing.T) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	bin := filepath.Join(t.TempDir(), "kestrel-platform")
	args := []string{"build", "-o", bin}
	if tags := os.Getenv("KESTREL_PLATFORM_TAGS"); tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, "./cmd/kestrel-platform")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kestrel-platform: %v\n%s", err, out)
	}
	return bin
}

// verify checks the database against the devices: every record each
// device generated is stored exactly once, no gap is open, and each
// device's rows match what its spool stand-in committed (PUBACKed).
func verify(t *testing.T, dbURL, fleetName string, f *Fleet) {
	t.Helper()
	ctx := context.Background()
	st, err := platform.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := 0
	for _, d := range f.Devices {
		want += int(d.Generated())
	}
	// The broker has everything once the spools are drained; wait for
	// the platform to commit it.
	// It has stalled (lost something) when nothing new commits for 15 s.
	var c platform.Counts
	last, lastChange := -1, time.Now()
	for {
		if c, err = st.Count(ctx, fleetName); err != nil {
			t.Fatal(err)
		}
		if c.Total() != last {
			last, lastChange = c.Total(), time.Now()
		}
		if c.Total() >= want || time.Since(lastChange) > 15*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := map[string]map[uint64]int{}
	if err := st.Keys(ctx, fleetName, func(dev string, _ uint32, seq uint64) {
		if got[dev] == nil {
			got[dev] = map[uint64]int{}
		}
		got[dev][seq]++
	}); err != nil {
		t.Fatal(err)
	}
	var missing, dups int
	for _, d := range f.Devices {
		n := d.Generated()
		for s := uint64(1); s <= n; s++ {
			switch got[d.ID][s] {
			case 0:
				missing++
				if missing <= 5 {
					t.Errorf("%s seq %d not stored", d.ID, s)
				}
			case 1:
			default:
				dups++
			}
		}
		if len(got[d.ID]) != int(n) {
			t.Errorf("%s: %d rows, generated %d", d.ID, len(got[d.ID]), n)
		}
		if cm := d.Outbox.Committed(); cm != len(got[d.ID]) {
			t.Errorf("%s: spool committed %d, database has %d", d.ID, cm, len(got[d.ID]))
		}
		if bad := d.Outbox.BadOps(); len(bad) > 0 {
			t.Errorf("%s: spool protocol violations: %v", d.ID, bad[:min(3, len(bad))])
		}
	}
	if c.OpenGaps != 0 {
		gs, _ := st.Gaps(ctx, platform.GapQuery{Fleet: fleetName})
		t.Errorf("%d open gaps, e.g. %+v", c.OpenGaps, gs[:min(3, len(gs))])
	}
	t.Logf("%d devices, %d records generated, %d stored (%d positions, %d events), %d missing, %d duplicated, %d open gaps",
		len(f.Devices), want, c.Total(), c.Positions, c.Events, missing, dups, c.OpenGaps)
	if missing > 0 || dups > 0 || c.Total() != want {
		t.Fatalf("not exactly once: %d missing, %d duplicated, %d stored of %d", missing, dups, c.Total(), want)
	}
}

// TestServeKilledExactlyOnce is the platform's delivery guarantee end to
// end with real parts: devices run the real transport/mqtt session against
// mosquitto (persistence on); the built kestrel-platform binary ingests
// into PostgreSQL and is killed with SIGKILL again and again mid-run; the
// database, the broker and the devices are each restarted once. Every
// record ends up stored exactly once, with no gap open. With the
// kestrel_earlyack tag (PUBACK on arrival, before the commit) it fails:
//
//	KESTREL_PLATFORM_TAGS=kestrel_earlyack go test -run TestServeKilledExactlyOnce ./hwtest/fleetsim
func TestServeKilledExactlyOnce(t *testing.T) {
	pg, dbURL, mq, bin := mosquittoRun(t, "fsync = off")
	ndev := envInt("KESTREL_FLEETSIM_DEVICES", 20)
	kills := envInt("KESTREL_SERVE_KILLS", 20)
	ctx := context.Background()
	srv, _ := startServe(t, bin, mq.URL(), dbURL, "e2e-platform")
	logFile := srv.Log
	rate := float64(envInt("KESTREL_FLEETSIM_RATE", 10))
	f, err := Start(ctx, Config{Broker: mq.URL(), Fleet: "e2e", Devices: ndev, Rate: rate, BatchAge: 200 * time.Millisecond, EventEvery: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range kills {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		if srv.Exited() {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("serve exited on its own:\n%s", b)
		}
		srv.Kill()
		switch i {
		case kills / 4:
			if err := pg.Restart(); err != nil {
				t.Fatal(err)
			}
		case kills / 2:
			if err := mq.Restart(); err != nil {
				t.Fatal(err)
			}
		case 3 * kills / 4:
			if err := f.RestartDevices(); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
	}
	f.StopGenerating()
	dctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := f.WaitDrained(dctx); err != nil {
		t.Fatal(err)
	}
	verify(t, dbURL, "e2e", f)
	if t.Failed() {
		b, _ := os.ReadFile(logFile)
		t.Logf("serve log (tail):\n%s", tail(string(b), 20))
	}
	fmt.Fprintf(os.Stderr, "serve killed %d times; database, broker and devices restarted once each\n", kills)
}

// mosquittoRun skips under -short or without mosquitto, and starts what a
// run through mosquitto needs: PostgreSQL (with the settings) and a database
// on it, mosquitto with persistence, and the built serve binary. Each stops
// when the test ends.
func mosquittoRun(t *testing.T, pgSettings ...string) (*postgres.Server, string, *Mosquitto, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	if _, err := mosquittoBin(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	pg := postgres.Start(t, pgSettings...)
	dbURL := pg.URL(t)
	mq, err := StartMosquitto(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mq.Stop)
	return pg, dbURL, mq, buildServe(t)
}

// startServe starts a serve process for broker and db with its read API
// on a free port, waits until it is subscribed (the broker keeps messages
// only for a session that exists), and stops it when the test ends.
func startServe(t *testing.T, bin, broker, dbURL, clientID string, extra ...string) (*Serve, string) {
	t.Helper()
	addr := freeAddr(t)
	s := &Serve{Bin: bin, Log: filepath.Join(t.TempDir(), clientID+".log"),
		Args: append([]string{"--broker", broker, "--db", dbURL, "--client-id", clientID, "--http", addr, "--log-level", "warn"}, extra...)}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := WaitHealthy(addr, 60*time.Second); err != nil {
		b, _ := os.ReadFile(s.Log)
		t.Fatalf("%v\n%s", err, tail(string(b), 20))
	}
	return s, addr
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// metric reads one sample of a serve's /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestSharedSubscriptionSplitsLoad runs two serve instances in one
// shared-subscription group ($share/GROUP/...) on mosquitto into one
// database: both take a part of the load, one is killed and restarted
// mid-run, and every record is stored exactly once.
func TestSharedSubscriptionSplitsLoad(t *testing.T) {
	_, dbURL, mq, bin := mosquittoRun(t, "fsync = off")
	var srvs []*Serve
	var addrs []string
	for i := range 2 {
		s, addr := startServe(t, bin, mq.URL(), dbURL, fmt.Sprintf("platform-%d", i), "--share", "ingest")
		srvs, addrs = append(srvs, s), append(addrs, addr)
	}
	f, err := Start(context.Background(), Config{Broker: mq.URL(), Fleet: "shared", Devices: 20, Rate: 10, BatchAge: 200 * time.Millisecond, EventEvery: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(3 * time.Second)
	before := []float64{metric(t, addrs[0], "kestrel_platform_rows_inserted_total"), metric(t, addrs[1], "kestrel_platform_rows_inserted_total")}
	srvs[1].Kill()
	time.Sleep(2 * time.Second)
	if err := srvs[1].Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	f.StopGenerating()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := f.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	verify(t, dbURL, "shared", f)
	t.Logf("rows inserted in the first 3 s: instance 0 %.0f, instance 1 %.0f", before[0], before[1])
	if before[0] == 0 || before[1] == 0 {
		t.Errorf("the load was not split: rows inserted %v", before)
	}
}
