package mqtt

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/faultproxy"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// TestLinkBudget counts every byte on the TCP stream between the session
// and the broker, both directions (MQTT framing, topics, PUBACKs, pings,
// CONNECT and the birth message included), through hwtest/faultproxy, over
// 10 minutes of the real 1 Hz run track, per link profile, with TLS and
// without, beside one JSON message per fix through the same proxy and the
// computed TETRA LIP and Codec 8 peers. It prints the table of
// docs/benchmarks.md, "Link budget":
//
//	KESTREL_LINKBUDGET=1 go test ./transport/mqtt/ -run TestLinkBudget -v
//
// Time is compressed 20 times, honestly: the fixes come every 50 ms and
// every timer of the session (batch ages, keepalive, ping timeout) is
// divided by 20, so the same messages and pings cross the link; the
// latencies are measured on the compressed clock and multiplied back.
// Loopback adds no link delay.
func TestLinkBudget(t *testing.T) {
	if os.Getenv("KESTREL_LINKBUDGET") == "" {
		t.Skip("set KESTREL_LINKBUDGET=1 (about 2 minutes)")
	}
	const (
		fixes    = 600 // 10 minutes at 1 Hz
		compress = 20
		// A device in service: a year of fixes and daily restarts. The
		// header carries seq and boot in every message (varbits: a
		// 25-bit seq costs 34 bits), so a fresh device's small numbers
		// would flatter the count by about 0.3 B/fix.
		seq0, boot  = 31_536_000, 365
		emergencies = 10
	)
	track := dayOfFixes(t, seq0, fixes+emergencies)
	for i := range track {
		track[i].Boot = boot
	}
	type row struct {
		name           string
		fixes          int
		bytes, up, dn  int64
		setup          int64 // CONNECT, CONNACK, SUBSCRIBEs, birth: once per connection
		msgs           int
		p99, maxLat    time.Duration
		emMax          time.Duration // emergencies, raised after the counted run
		p99OK, latNote string
	}
	var rows []row
	// run streams segments of fixes at 1 Hz (compressed), one after the
	// other; after each segment but the last it waits until the session
	// has sent everything, so no message spans two segments (the measured
	// logs are separate receivers).
	run := func(name string, prof Profile, tlsOn bool, segments ...[]kestrel.Record) {
		t.Helper()
		if len(segments) == 0 {
			segments = [][]kestrel.Record{track[:fixes]}
		}
		total := 0
		for _, seg := range segments {
			total += len(seg)
		}
		var opts []broker.Option
		var ca *broker.CA
		if tlsOn {
			ca = broker.NewCA(t)
			opts = append(opts, broker.WithTLS(ca))
		}
		br := broker.StartMochi(t, opts...)
		obs := br.Observe(wire.Topic(testFleet, testDevice, "telemetry"))
		evs := br.Observe(wire.Topic(testFleet, testDevice, "events"))
		px := faultproxy.Start(t, br.Addr())
		out := broker.NewOutbox()
		o := testOptions("tcp://" + px.Addr())
		if tlsOn {
			o = testOptions("tls://" + px.Addr())
			o.TLS = ca.ClientTLS(t)
		}
		o.Profile = prof.Name
		o.Boot = boot
		o.BatchAge = prof.NormalAge / compress
		o.BulkAge = prof.BulkAge / compress
		o.KeepAlive = max(prof.KeepAlive/compress, time.Second)
		o.PingTimeout = max(prof.PingTimeout/compress, time.Second)
		s := runSession(t, o, out)
		waitFor(t, "connected", s.Connected)
		time.Sleep(300 * time.Millisecond) // subscriptions and birth done
		st0 := px.Stats()
		added := make(map[uint64]time.Time, total)
		for _, seg := range segments {
			start := time.Now()
			for i, r := range seg {
				next := start.Add(time.Duration(i) * time.Second / compress)
				time.Sleep(time.Until(next))
				// r.Time stays the receiver's time, 1 s apart as a 1 Hz
				// receiver stamps its fixes: only the session's clock is
				// compressed, the payload is the one a real link carries.
				added[r.Seq] = time.Now()
				out.Add(r)
			}
			waitDrained(t, out, 30*time.Second)
		}
		// Let one keepalive interval pass idle, as the link would between
		// bursts, so pings are counted too.
		time.Sleep(o.KeepAlive + 200*time.Millisecond)
		st := px.Stats()
		// Then emergencies amid the live stream (not counted: they are
		// rare, and an event message costs what it costs): each must
		// reach the broker at once, never waiting for a batch. Measured
		// on the real clock, as the emergency path has no timer.
		emAt := map[uint64]time.Time{}
		for j := range emergencies {
			out.Add(track[fixes+j])
			em := emergency(seq0 + fixes + emergencies + uint64(j))
			em.Boot = boot
			emAt[em.Seq] = time.Now()
			out.Add(em)
			time.Sleep(time.Second / compress)
		}
		if !evs.Wait(10*time.Second, func(m []broker.Message) bool { return len(m) >= emergencies }) {
			t.Fatalf("%s: %d of %d emergencies at the broker", name, evs.Len(), emergencies)
		}
		var emMax time.Duration
		for _, m := range evs.Messages() {
			recs, err := wire.DecodeBatchTopic(m.Topic, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				emMax = max(emMax, m.At.Sub(emAt[r.Seq]))
			}
		}
		var lat []time.Duration
		for _, m := range obs.Messages() {
			recs, err := wire.DecodeBatchTopic(m.Topic, m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if at, ok := added[r.Seq]; ok {
					lat = append(lat, m.At.Sub(at)*compress)
				}
			}
		}
		slices.Sort(lat)
		if len(lat) != total {
			t.Fatalf("%s: %d fixes at the broker, sent %d", name, len(lat), total)
		}
		rows = append(rows, row{name: name, fixes: total, bytes: st.Up + st.Down, up: st.Up, dn: st.Down, msgs: obs.Len(), setup: st0.Up + st0.Down,
			p99: lat[len(lat)*99/100], maxLat: lat[len(lat)-1], emMax: emMax})
	}
	run("Kestrel, lte profile", ProfileLTE, false)
	run("Kestrel, narrowband profile", ProfileNarrowband, false)
	run("Kestrel, lte profile, TLS 1.3", ProfileLTE, true)
	run("Kestrel, narrowband profile, TLS 1.3", ProfileNarrowband, true)
	// Real receivers that measure speed and course (Doppler): the 21 1 Hz
	// gpsd logs of transport/wire/testdata/measured, one after another.
	logs := measuredLogs(t, seq0+fixes+2*emergencies, boot)
	run("Kestrel, lte profile, measured speed/course (21 gpsd logs)", ProfileLTE, false, logs...)
	run("Kestrel, narrowband profile, measured speed/course (21 gpsd logs)", ProfileNarrowband, false, logs...)

	// The peer: one JSON message per fix, QoS 1, through the same kind of
	// proxy (the fixes 1 s apart, compressed like the rest).
	{
		br := broker.StartMochi(t)
		px := faultproxy.Start(t, br.Addr())
		cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + px.Addr()).SetClientID("peer").
			SetProtocolVersion(4).SetKeepAlive(60 * time.Second / compress))
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		topic := wire.Topic(testFleet, testDevice, "telemetry")
		start := time.Now()
		for i := range track[:fixes] {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / compress)))
			p := wire.AppendFixJSON(nil, track[i].Time, track[i].Body.(*kestrel.Position))
			if tok := cl.Publish(topic, 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal("peer publish")
			}
		}
		cl.Disconnect(0)
		st := px.Stats()
		rows = append(rows, row{name: "JSON over MQTT, one message per fix (QoS 1)", fixes: fixes, bytes: st.Up + st.Down, up: st.Up, dn: st.Down, msgs: fixes})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "| stream | B/fix both ways | without the connection setup | up | down | setup | messages | normal p99 | max | emergency max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		lat := "- | - | -"
		if r.p99 > 0 {
			lat = fmt.Sprintf("%.2f s | %.2f s | %.1f ms", r.p99.Seconds(), r.maxLat.Seconds(), float64(r.emMax.Microseconds())/1000)
		}
		n := float64(r.fixes)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %d | %d | %d | %d | %s |\n", r.name, float64(r.bytes)/n, float64(r.bytes-r.setup)/n, r.up, r.dn, r.setup, r.msgs, lat)
	}
	// Computed peers: LIP is a fixed 84-bit report per fix in an SDS
	// (the SDS-TL header not counted: 10.5 B is the report alone); Codec 8
	// as Teltonika's defaults batch (a record a second, a packet when 10
	// records are stored: 30 B per record + 15 B of packet, 4 B of ACK).
	fmt.Fprintf(&b, "| TETRA LIP short location report over SDS (computed: 84 bits per fix) | %.2f | | | | | %d | | | |\n", 10.5, fixes)
	fmt.Fprintf(&b, "| Teltonika Codec 8 over TCP, 10 records per packet (computed: 30 B/record + 15 B + 4 B ACK) | %.2f | | | | | %d | | | |\n", (30.0*10+15+4)/10, fixes/10)
	t.Log("\n" + b.String())
	if p := os.Getenv("KESTREL_LINKBUDGET_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The targets, all counted: lte at most 20 B/fix with normal p99
	// within 5 s, narrowband at most 10 B/fix within 10 s; emergencies
	// within 1 s on both.
	// On the measured logs only lte's bound is asserted: narrowband there
	// is over 10 B/fix (docs/wire.md, "Measured speed and course").
	for _, r := range []row{rows[0], rows[1], rows[4]} {
		limit, bound, per := 20.0, 5*time.Second, float64(r.bytes)/float64(r.fixes)
		if strings.Contains(r.name, "narrowband") {
			limit, bound = 10, 10*time.Second
		}
		if r.emMax > time.Second {
			t.Errorf("%s: an emergency took %v, over 1 s", r.name, r.emMax)
		}
		if per > limit {
			t.Errorf("%s: %.2f B/fix, over %.0f", r.name, per, limit)
		}
		if r.p99 > bound {
			t.Errorf("%s: normal p99 %v, over %v", r.name, r.p99, bound)
		}
	}
}

// measuredLogs reads the measured logs of transport/wire/testdata/measured
// through the GPS driver, one segment per log, numbered from seq on.
func measuredLogs(t *testing.T, seq uint64, boot uint32) [][]kestrel.Record {
	t.Helper()
	files, err := filepath.Glob("../wire/testdata/measured/*.log")
	if err != nil || len(files) < 20 {
		t.Fatalf("measured logs missing: %d files, %v", len(files), err)
	}
	var out [][]kestrel.Record
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		var seg []kestrel.Record
		_, err = nmea.Decode(fh, nmea.Options{}, func(fx nmea.Fix) error {
			p := fx.Pos
			seg = append(seg, kestrel.Record{
				Envelope: kestrel.Envelope{Device: testDevice, Boot: boot, Seq: seq, Time: fx.Time, Priority: kestrel.PriorityNormal},
				Body:     &p,
			})
			seq++
			return nil
		})
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, seg)
	}
	return out
}
