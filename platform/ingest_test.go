package platform

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

func publisher(t *testing.T, url string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-device").SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func publish(t *testing.T, c paho.Client, m Message, retained bool) {
	t.Helper()
	if tok := c.Publish(m.Topic, 1, retained, m.Payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func startIngest(t *testing.T, s *Store, o IngestOptions) (stop func()) {
	t.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	in, err := NewIngest(s, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !in.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // SUBACK
	return func() {
		cancel()
		<-done
	}
}

func waitCount(t *testing.T, s *Store, want int) Counts {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := s.Count(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Total() >= want || time.Now().After(deadline) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The persistent session: what arrives while the platform is away is
// delivered when it comes back with the same client id, and stored once.
func TestIngestPersistentSession(t *testing.T) {
	b := broker.StartMochi(t)
	s := openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "k.db"))
	m := NewMetrics()
	stop := startIngest(t, s, IngestOptions{Broker: b.URL(), ClientID: "platform-test", Metrics: m})
	pub := publisher(t, b.URL())
	for i := range 20 {
		publish(t, pub, message(t, "met", "bwc-1", ChannelTelemetry, seqRecs("bwc-1", 1, uint64(2*i+1), uint64(2*i+2))...), false)
	}
	publish(t, pub, stateMsg(t, "met", "bwc-1", true, 1, 1000), true)
	if c := waitCount(t, s, 40); c.Positions != 40 || c.OpenGaps != 0 {
		t.Fatalf("online: %+v", c)
	}
	stop()
	// Away: these wait in the broker's session for "platform-test".
	for i := 20; i < 30; i++ {
		publish(t, pub, message(t, "met", "bwc-1", ChannelTelemetry, seqRecs("bwc-1", 1, uint64(2*i+1), uint64(2*i+2))...), false)
	}
	publish(t, pub, Message{Topic: "kestrel/v1/met/bwc-1/audit", Payload: []byte(`{"key_id":"k1","result":"applied"}`)}, false)
	publish(t, pub, Message{Topic: "kestrel/v1/met/bwc-1/telemetry", Payload: []byte("not a batch")}, false)
	stop = startIngest(t, s, IngestOptions{Broker: b.URL(), ClientID: "platform-test", Metrics: m})
	defer stop()
	c := waitCount(t, s, 60)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && c.Rejected == 0; {
		time.Sleep(20 * time.Millisecond)
		c, _ = s.Count(context.Background(), "")
	}
	if c.Positions != 60 || c.OpenGaps != 0 || c.Rejected != 1 {
		t.Fatalf("after reconnect: %+v, want 60 positions, 0 gaps, 1 rejected", c)
	}
	var reports int
	_ = s.DB().QueryRow("SELECT count(*) FROM reports WHERE channel = 'audit'").Scan(&reports)
	if reports != 1 {
		t.Errorf("audit reports %d", reports)
	}

	// The read API and the metrics.
	srv := httptest.NewServer(API(s, m, nil))
	defer srv.Close()
	get := func(path string) string {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return string(body)
	}
	var devs struct{ Devices []Device }
	if err := json.Unmarshal([]byte(get("/api/v1/devices")), &devs); err != nil || len(devs.Devices) != 1 || devs.Devices[0].Online == nil || !*devs.Devices[0].Online {
		t.Fatalf("devices %+v %v", devs, err)
	}
	var fc struct {
		Type     string
		Features []json.RawMessage
	}
	if err := json.Unmarshal([]byte(get("/api/v1/track?device=bwc-1&format=geojson")), &fc); err != nil || fc.Type != "FeatureCollection" || len(fc.Features) != 60 {
		t.Fatalf("geojson: %s %d features %v", fc.Type, len(fc.Features), err)
	}
	if g := get("/api/v1/gaps"); !strings.Contains(g, `"gaps": []`) {
		t.Errorf("gaps: %s", g)
	}
	metrics := get("/metrics")
	for _, want := range []string{"kestrel_platform_messages_total{channel=\"telemetry\"}", "kestrel_platform_rows_inserted_total 60",
		"kestrel_platform_decode_failures_total 1", "kestrel_platform_ingest_lag_seconds_bucket", "kestrel_platform_redeliveries_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
