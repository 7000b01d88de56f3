package fleetsim

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// naivePeer is the peer of the benchmark: a subscriber with paho's
// auto-ack (PUBACK when the handler returns, whatever happened to the data)
// and a clean session, that inserts one row per record, each in its own
// autocommit statement.
type naivePeer struct {
	db     *sql.DB
	client paho.Client
	mu     sync.Mutex
	lags   []float64 // seconds, record time to insert done
	rows   int
	errs   int
}

func startNaive(t *testing.T, brokerURL, dbURL, fleet string) *naivePeer {
	t.Helper()
	st, err := platform.Open(context.Background(), dbURL) // the same schema
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PreparePartitions(context.Background(), time.Now(), time.Now().AddDate(0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	p := &naivePeer{db: db}
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID("naive-peer").SetCleanSession(true)
	p.client = paho.NewClient(o)
	if tok := p.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("naive connect: %v", tok.Error())
	}
	topic := wire.Topic(fleet, "+", "+")
	if tok := p.client.Subscribe(topic, 1, p.handle); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("naive subscribe: %v", tok.Error())
	}
	t.Cleanup(func() {
		p.client.Disconnect(100)
		db.Close()
	})
	return p
}

func (p *naivePeer) handle(_ paho.Client, m paho.Message) {
	recs, err := wire.DecodeBatchTopic(m.Topic(), m.Payload())
	if err != nil {
		return
	}
	fleet, _, _, _ := platform.ParseTopic(m.Topic())
	for _, r := range recs {
		pos, ok := r.Body.(*kestrel.Position)
		var err error
		if ok {
			_, err = p.db.Exec(`INSERT INTO positions (fleet, device, boot, seq, time, lat, lon, alt, speed, track, mode, sats, hdop, priority, received)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now()) ON CONFLICT DO NOTHING`,
				fleet, r.Device, int64(r.Boot), int64(r.Seq), time.UnixMilli(r.Time), float64(pos.Lat)/1e7, float64(pos.Lon)/1e7,
				float64(pos.Alt)/100, float64(pos.Speed)/100, float64(pos.Track)/100, int(pos.Mode), int(pos.Sats), float64(pos.HDOP)/100, r.Priority.String())
		} else {
			_, err = p.db.Exec(`INSERT INTO records (fleet, device, boot, seq, time, kind, priority, body, received)
VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', now()) ON CONFLICT DO NOTHING`, fleet, r.Device, int64(r.Boot), int64(r.Seq), time.UnixMilli(r.Time), r.Kind().String(), r.Priority.String())
		}
		lag := float64(time.Now().UnixMilli()-r.Time) / 1000
		p.mu.Lock()
		if err != nil {
			p.errs++
		} else {
			p.rows++
			p.lags = append(p.lags, lag)
		}
		p.mu.Unlock()
	}
}

func (p *naivePeer) snapshot() (rows, errs int, lags []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rows, p.errs, slices.Clone(p.lags)
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// histogram sums the lag histogram of several serves' /metrics.
func lagHistogram(t *testing.T, addrs []string) (les []float64, counts []float64) {
	t.Helper()
	sum := map[float64]float64{}
	for _, a := range addrs {
		resp, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			rest, ok := strings.CutPrefix(line, `kestrel_platform_ingest_lag_seconds_bucket{le="`)
			if !ok {
				continue
			}
			le, val, _ := strings.Cut(rest, `"} `)
			l, err1 := strconv.ParseFloat(le, 64)
			v, err2 := strconv.ParseFloat(val, 64)
			if err1 == nil && err2 == nil {
				sum[l] += v
			}
		}
	}
	for l := range sum {
		les = append(les, l)
	}
	slices.Sort(les)
	for _, l := range les {
		counts = append(counts, sum[l])
	}
	return les, counts
}

// histQuantile is the q-quantile of a cumulative histogram, interpolated
// within its bucket (the buckets are 11% apart).
func histQuantile(les, cum []float64, q float64) float64 {
	if len(cum) == 0 || cum[len(cum)-1] == 0 {
		return math.NaN()
	}
	target := q * cum[len(cum)-1]
	prevLE, prevC := 0.0, 0.0
	for i, c := range cum {
		if c >= target {
			if math.IsInf(les[i], 1) {
				return prevLE
			}
			if c == prevC {
				return les[i]
			}
			return prevLE + (les[i]-prevLE)*(target-prevC)/(c-prevC)
		}
		prevLE, prevC = les[i], c
	}
	return les[len(les)-1]
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// TestFleetIngest runs a fleet at 1 Hz through one mosquitto into
// PostgreSQL (fsync on) via two serve instances in a shared-subscription
// group, beside the naive peer in the same run, and reports the ingest lag
// (a fix's time on the device to its committed row) of both. Nothing may
// be lost and no gap may stay open. CI runs a small fleet; "make
// platform-bench" runs 5,000 devices (docs/benchmarks.md).
func TestFleetIngest(t *testing.T) {
	ndev := envInt("KESTREL_BENCH_DEVICES", 50)
	runFor := envDuration("KESTREL_BENCH_FOR", 5*time.Second)
	pg, dbURL, mq, bin := mosquittoRun(t, "max_connections = 200")
	naiveURL := pg.URL(t)
	var addrs []string
	for i := range 2 {
		_, addr := startServe(t, bin, mq.URL(), dbURL, fmt.Sprintf("bench-%d", i), "--share", "bench")
		addrs = append(addrs, addr)
	}
	naive := startNaive(t, mq.URL(), naiveURL, "bench")
	start := time.Now()
	f, err := Start(context.Background(), Config{Broker: mq.URL(), Fleet: "bench", Devices: ndev, Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	connected := time.Since(start)
	time.Sleep(runFor)
	f.StopGenerating()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := f.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	verify(t, dbURL, "bench", f)
	les, cum := lagHistogram(t, addrs)
	want := f.Generated()
	// The naive peer: wait for it to stop making progress.
	last, lastChange := -1, time.Now()
	for {
		n, _, _ := naive.snapshot()
		if n != last {
			last, lastChange = n, time.Now()
		}
		if n >= want || time.Since(lastChange) > 15*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	nrows, nerrs, nlags := naive.snapshot()
	slices.Sort(nlags)
	line := fmt.Sprintf("%d devices at 1 Hz for %v (%d records; sessions up in %v): serve x2 lag p50 %.2fs p99 %.2fs, %d stored, 0 lost, gaps 0 | naive peer lag p50 %.2fs p99 %.2fs, %d of %d stored (%d insert errors)",
		ndev, runFor, want, connected.Round(time.Second), histQuantile(les, cum, 0.5), histQuantile(les, cum, 0.99), want,
		quantile(nlags, 0.5), quantile(nlags, 0.99), nrows, want, nerrs)
	t.Log(line)
	if out := os.Getenv("KESTREL_BENCH_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(line+"\n"), 0o644)
	}
}
