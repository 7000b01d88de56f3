package platform

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/postgres"
	"github.com/kestrel-edge/kestrel/transport/wire"
	"github.com/tinylib/msgp/msgp"
)

// eachStore runs the contract suite against every Store implementation:
// SQLite in process, and Debian's PostgreSQL started by the test.
func eachStore(t *testing.T, f func(t *testing.T, open func(t *testing.T) *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, func(t *testing.T) *Store {
			return openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "kestrel.db"))
		})
	})
	t.Run("postgres", func(t *testing.T) {
		srv := sharedPostgres(t)
		f(t, func(t *testing.T) *Store { return openStore(t, srv.URL(t)) })
	})
}

var (
	pgOnce sync.Once
	pgSrv  *postgres.Server
	pgErr  error
)

// sharedPostgres is one server for the package's tests (initdb is the
// slow part), stopped by TestMain; each test gets its own database on it.
func sharedPostgres(t *testing.T) *postgres.Server {
	if err := postgres.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	pgOnce.Do(func() { pgSrv, pgErr = postgres.New("fsync = off") })
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgSrv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pgSrv != nil {
		pgSrv.Close()
	}
	os.Exit(code)
}

func openStore(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pos(dev string, boot uint32, seq uint64, t int64, lat, lon int32) kestrel.Record {
	return kestrel.Record{
		Envelope: kestrel.Envelope{Device: dev, Boot: boot, Seq: seq, Time: t, Priority: kestrel.PriorityNormal},
		Body: &kestrel.Position{Lat: lat, Lon: lon, Alt: 3521, Speed: 130, Track: 27150, Mode: kestrel.Fix3D, Sats: 9, HDOP: 87,
			Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP},
	}
}

// message encodes records as the agent publishes them.
func message(t testing.TB, fleet, dev, channel string, recs ...kestrel.Record) Message {
	t.Helper()
	var enc wire.Encoder
	p, err := enc.AppendBatch(nil, dev, recs)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Topic: wire.Topic(fleet, dev, channel), Payload: p, Received: time.Now()}
}

func write(t *testing.T, s *Store, msgs ...Message) WriteResult {
	t.Helper()
	var b Batch
	for _, m := range msgs {
		_ = b.Add(m)
	}
	res, err := s.Write(context.Background(), &b)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func seqRecs(dev string, boot uint32, seqs ...uint64) []kestrel.Record {
	var out []kestrel.Record
	for _, s := range seqs {
		out = append(out, pos(dev, boot, s, 1560938662000+int64(s)*1000, 515000000+int32(s), -1200000))
	}
	return out
}

func openGaps(t *testing.T, s *Store, dev string) [][2]uint64 {
	t.Helper()
	gs, err := s.Gaps(context.Background(), GapQuery{Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]uint64
	for _, g := range gs {
		out = append(out, [2]uint64{g.FirstSeq, g.LastSeq})
	}
	return out
}

func TestStoreContract(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		t.Run("idempotent", func(t *testing.T) {
			s := open(t)
			m := message(t, "met", "bwc-1", ChannelTelemetry, seqRecs("bwc-1", 1, 1, 2, 3)...)
			if r := write(t, s, m); r.Inserted != 3 || r.Duplicates != 0 {
				t.Fatalf("first write: %+v", r)
			}
			if r := write(t, s, m, m); r.Inserted != 0 || r.Duplicates != 6 {
				t.Fatalf("redelivery: %+v, want 0 inserted, 6 duplicates", r)
			}
			c, err := s.Count(context.Background(), "met")
			if err != nil || c.Positions != 3 || c.OpenGaps != 0 {
				t.Fatalf("counts %+v %v", c, err)
			}
		})
		t.Run("round trip", func(t *testing.T) {
			s := open(t)
			in := pos("bwc-2", 4, 17, 1560938662123, 515000123, -1234567)
			bare := pos("bwc-2", 4, 18, 1560938663000, -335000001, 1510000000)
			bare.Body = &kestrel.Position{Lat: -335000001, Lon: 1510000000, Mode: kestrel.Fix2D}
			write(t, s, message(t, "met", "bwc-2", ChannelTelemetry, in, bare))
			var got []kestrel.Record
			if err := s.Track(context.Background(), TrackQuery{Device: "bwc-2"}, func(p *TrackPoint) error {
				got = append(got, p.Record)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 {
				t.Fatalf("track has %d points", len(got))
			}
			for i, want := range []kestrel.Record{in, bare} {
				a, b := wire.AppendJSON(nil, &want), wire.AppendJSON(nil, &got[i])
				if string(a) != string(b) {
					t.Errorf("point %d:\n got %s\nwant %s", i, b, a)
				}
			}
			// From/To bound the time; To is exclusive.
			n := 0
			_ = s.Track(context.Background(), TrackQuery{Device: "bwc-2", From: time.UnixMilli(1560938662124), To: time.UnixMilli(1560938663001)}, func(*TrackPoint) error { n++; return nil })
			if n != 1 {
				t.Errorf("bounded track: %d points, want 1", n)
			}
		})
		t.Run("gaps open and close", func(t *testing.T) {
			s := open(t)
			d := "bwc-3"
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, 1, 2, 10)...))
			if g := openGaps(t, s, d); fmt.Sprint(g) != "[[3 9]]" {
				t.Fatalf("gaps %v, want [[3 9]]", g)
			}
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, 6)...))
			if g := openGaps(t, s, d); fmt.Sprint(g) != "[[3 5] [7 9]]" {
				t.Fatalf("after 6: gaps %v", g)
			}
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, 3, 9, 4)...))
			if g := openGaps(t, s, d); fmt.Sprint(g) != "[[5 5] [7 8]]" {
				t.Fatalf("after 3, 9, 4: gaps %v", g)
			}
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, 5, 7, 8)...))
			if g := openGaps(t, s, d); len(g) != 0 {
				t.Fatalf("filled: open gaps %v", g)
			}
			all, err := s.Gaps(context.Background(), GapQuery{Device: d, All: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range all {
				if g.Closed == nil {
					t.Errorf("gap %+v still open", g)
				}
			}
			if len(all) == 0 {
				t.Error("no closed gap rows kept")
			}
			// Newest first (the live lane) then the backlog: a gap below
			// the first seq seen opens, and closes when the backlog comes.
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 2, 100)...))
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 2, 90)...))
			if g := openGaps(t, s, d); fmt.Sprint(g) != "[[91 99]]" {
				t.Fatalf("boot 2: gaps %v", g)
			}
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 2, 91, 92, 93, 94, 95, 96, 97, 98, 99)...))
			if g := openGaps(t, s, d); len(g) != 0 {
				t.Fatalf("boot 2 filled: gaps %v", g)
			}
		})
		t.Run("kinds", func(t *testing.T) {
			s := open(t)
			d := "car-7"
			ev := kestrel.Record{Envelope: kestrel.Envelope{Device: d, Boot: 1, Seq: 1, Time: 1560938662000, Priority: kestrel.PriorityEmergency},
				Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "firmware", Name: "side-button", Value: 1, Text: "pressed"}}
			bat := kestrel.Record{Envelope: kestrel.Envelope{Device: d, Boot: 1, Seq: 2, Time: 1560938663000, Priority: kestrel.PriorityBulk},
				Body: &kestrel.Battery{Capacity: 81, Status: "Discharging", VoltageMV: 3900}}
			write(t, s, message(t, "met", d, ChannelEvents, ev), message(t, "met", d, ChannelTelemetry, bat))
			var typ, prio string
			if err := s.DB().QueryRow(s.d.q("SELECT type, priority FROM events WHERE device = ?"), d).Scan(&typ, &prio); err != nil || typ != "emergency" || prio != "emergency" {
				t.Fatalf("event row %q %q %v", typ, prio, err)
			}
			var kind string
			if err := s.DB().QueryRow(s.d.q("SELECT kind FROM records WHERE device = ? AND seq = 2"), d).Scan(&kind); err != nil || kind != "battery" {
				t.Fatalf("battery row %q %v", kind, err)
			}
			if c, _ := s.Count(context.Background(), "met"); c.Total() != 2 || c.OpenGaps != 0 {
				t.Fatalf("counts %+v", c)
			}
		})
		t.Run("bad input kept, not stored as records", func(t *testing.T) {
			s := open(t)
			var b Batch
			if err := b.Add(Message{Topic: "kestrel/v1/met/bwc-9/telemetry", Payload: []byte{0x93, 0x07, 0x01, 0x02}, Received: time.Now()}); err == nil {
				t.Fatal("a version-7 batch decoded")
			}
			// Only version 1 payloads name their device (version 2 takes it
			// from the topic).
			var enc wire.Encoder
			otherV1, err := enc.AppendBatchV1(nil, "bwc-8", seqRecs("bwc-8", 1, 1))
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Add(Message{Topic: "kestrel/v1/met/bwc-9/telemetry", Payload: otherV1, Received: time.Now()}); err == nil {
				t.Fatal("a batch for another device than its topic was accepted")
			}
			nul := kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-9", Boot: 1, Seq: 5, Time: 1560938662000},
				Body: &kestrel.Event{Type: kestrel.EventSDS, Text: "a\x00b"}}
			far := pos("bwc-9", 1, 6, 1<<62, 1, 1)
			for _, r := range []kestrel.Record{nul, far} {
				if err := b.Add(message(t, "met", "bwc-9", ChannelEvents, r)); err == nil {
					t.Fatalf("record %+v that no store can hold was accepted", r)
				}
			}
			res, err := s.Write(context.Background(), &b)
			if err != nil || res.Rejected != 4 {
				t.Fatalf("write %+v %v", res, err)
			}
			c, _ := s.Count(context.Background(), "")
			if c.Rejected != 4 || c.Total() != 0 {
				t.Fatalf("counts %+v", c)
			}
		})
		t.Run("devices and state", func(t *testing.T) {
			s := open(t)
			d := "bwc-5"
			write(t, s, message(t, "met", d, ChannelTelemetry, seqRecs(d, 3, 1, 2)...))
			birth := stateMsg(t, "met", d, true, 3, 2000)
			oldDeath := stateMsg(t, "met", d, false, 2, 1000)
			write(t, s, birth, oldDeath)
			devs, err := s.Devices(context.Background(), "met")
			if err != nil || len(devs) != 1 {
				t.Fatalf("devices %+v %v", devs, err)
			}
			dv := devs[0]
			if dv.Online == nil || !*dv.Online || dv.Boot == nil || *dv.Boot != 3 || dv.Version != "1.2.3" || dv.LastFixTime == nil || dv.LastSeen == nil {
				t.Fatalf("device %+v", dv)
			}
			if dv.LastFixTime.UnixMilli() != 1560938662000+2000 {
				t.Errorf("last fix %v", dv.LastFixTime)
			}
			write(t, s, stateMsg(t, "met", d, false, 3, 3000))
			devs, _ = s.Devices(context.Background(), "met")
			if *devs[0].Online {
				t.Error("a newer death did not mark the device offline")
			}
		})
		t.Run("concurrent writers", func(t *testing.T) {
			s := open(t)
			// Two instances of a shared subscription get interleaved
			// messages of the same devices, redeliveries included.
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for w := range 2 {
				wg.Go(func() {
					for i := range 30 {
						var b Batch
						for dv := range 5 {
							d := fmt.Sprintf("bwc-%d", dv)
							seq := uint64(i*2 + w + 1)
							_ = b.Add(message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, seq)...))
							if i%7 == 0 {
								_ = b.Add(message(t, "met", d, ChannelTelemetry, seqRecs(d, 1, uint64(i*2+(1-w)+1))...))
							}
						}
						if _, err := s.Write(context.Background(), &b); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			c, _ := s.Count(context.Background(), "met")
			if c.Positions != 5*60 || c.OpenGaps != 0 {
				t.Fatalf("counts %+v, want 300 positions, 0 open gaps", c)
			}
		})
		t.Run("migrations are versioned and idempotent", func(t *testing.T) {
			s := open(t)
			if err := s.migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			var v int
			if err := s.DB().QueryRow("SELECT max(version) FROM schema_migrations").Scan(&v); err != nil || v < 1 {
				t.Fatalf("schema version %d %v", v, err)
			}
			if s.PostGIS() {
				// The spatial column is filled from lat/lon by PostGIS.
				write(t, s, message(t, "met", "bwc-g", ChannelTelemetry, seqRecs("bwc-g", 1, 1)...))
				var near int
				if err := s.DB().QueryRow("SELECT count(*) FROM positions WHERE ST_DWithin(geog, ST_SetSRID(ST_MakePoint(-0.12, 51.5), 4326)::geography, 10)").Scan(&near); err != nil || near != 1 {
					t.Fatalf("postgis: %d positions within 10 m, %v", near, err)
				}
			} else if s.Dialect() == "postgres" {
				t.Log("postgis extension not available: positions have no geography column")
			}
		})
	})
}

func stateMsg(t testing.TB, fleet, dev string, online bool, boot uint32, at int64) Message {
	t.Helper()
	p := appendState(nil, online, boot, "1.2.3", at)
	return Message{Topic: wire.Topic(fleet, dev, ChannelState), Payload: p, Received: time.Now()}
}

// appendState encodes a state message as transport/mqtt's birth does.
func appendState(b []byte, online bool, boot uint32, version string, at int64) []byte {
	b = msgp.AppendMapHeader(b, 5)
	b = msgp.AppendString(b, "online")
	b = msgp.AppendBool(b, online)
	b = msgp.AppendString(b, "boot")
	b = msgp.AppendUint32(b, boot)
	b = msgp.AppendString(b, "bdseq")
	b = msgp.AppendUint64(b, 1)
	b = msgp.AppendString(b, "version")
	b = msgp.AppendString(b, version)
	b = msgp.AppendString(b, "time")
	return msgp.AppendInt64(b, at)
}

func TestOpenErrorsHidePassword(t *testing.T) {
	if got := redactURL("postgres://kestrel:s3cret@db.example:5432/k"); got != "postgres://kestrel:xxxxx@db.example:5432/k" {
		t.Errorf("redact: %s", got)
	}
	// Nothing listens on port 1: the error names the URL without the secret.
	_, err := Open(context.Background(), "postgres://kestrel:s3cret@127.0.0.1:1/k?connect_timeout=2")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("open error %v", err)
	}
	if _, err := Open(context.Background(), "mysql://x"); err == nil {
		t.Fatal("an unknown scheme opened")
	}
}
