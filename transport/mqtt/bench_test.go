package mqtt

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Reproduce: go test ./transport/mqtt -run '^$' -bench . -benchtime 5x
// (see docs/benchmarks.md, "MQTT delivery").

const dayFixes = 86400

func eachBrokerB(b *testing.B, f func(b *testing.B, start startFn)) {
	b.Run("mosquitto", func(b *testing.B) { f(b, broker.StartMosquitto) })
	b.Run("mochi", func(b *testing.B) { f(b, broker.StartMochi) })
}

// BenchmarkDrainDay: a day of 1 Hz fixes (real track, looped) queued while
// offline, drained to the broker over loopback: time per day, messages and
// payload bytes per day.
func BenchmarkDrainDay(b *testing.B) {
	eachBrokerB(b, func(b *testing.B, start startFn) {
		br := start(b)
		out := broker.NewOutbox()
		s := runSession(b, testOptions(br.URL()), out)
		waitFor(b, "connected", s.Connected)
		day := dayOfFixes(b, 1, dayFixes)
		var seq uint64 = 1
		var msgs, bytes uint64
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			recs := slices.Clone(day)
			for i := range recs {
				recs[i].Seq = seq
				seq++
			}
			m0, b0 := s.Stats().Messages.Load(), s.Stats().Bytes.Load()
			b.StartTimer()
			out.Add(recs...)
			waitDrained(b, out, 60*time.Second)
			b.StopTimer()
			msgs += s.Stats().Messages.Load() - m0
			bytes += s.Stats().Bytes.Load() - b0
		}
		b.ReportMetric(float64(msgs)/float64(b.N), "msgs/day")
		b.ReportMetric(float64(bytes)/float64(b.N), "B/day")
		b.ReportMetric(float64(bytes)/float64(b.N)/dayFixes, "B/fix")
	})
}

// BenchmarkPeerJSONPerFix is the usual tracker approach measured in the
// same run: one JSON message per fix (the nmea decode format, about 115
// bytes), QoS 1, through paho to the same broker with the same in-flight
// window as the session (defaultInFlight messages unacknowledged).
func BenchmarkPeerJSONPerFix(b *testing.B) {
	eachBrokerB(b, func(b *testing.B, start startFn) {
		br := start(b)
		cl := paho.NewClient(paho.NewClientOptions().AddBroker(br.URL()).SetClientID("peer").
			SetProtocolVersion(4).SetWriteTimeout(10 * time.Second))
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		defer cl.Disconnect(0)
		day := dayOfFixes(b, 1, dayFixes)
		payloads := make([][]byte, len(day))
		var total int
		for i := range day {
			payloads[i] = wire.AppendFixJSON(nil, day[i].Time, day[i].Body.(*kestrel.Position))
			total += len(payloads[i])
		}
		topic := wire.Topic(testFleet, testDevice, "telemetry")
		// The same in-flight window as the session's: at most
		// defaultInFlight messages unacknowledged, the oldest awaited
		// before the next goes (QoS 1 PUBACKs come in order).
		win := make([]paho.Token, defaultInFlight)
		wait := func(tok paho.Token) {
			if tok != nil && (!tok.WaitTimeout(60*time.Second) || tok.Error() != nil) {
				b.Fatal("peer publish:", tok.Error())
			}
		}
		b.ResetTimer()
		for range b.N {
			for i, p := range payloads {
				wait(win[i%len(win)])
				win[i%len(win)] = cl.Publish(topic, 1, false, p)
			}
			for i, tok := range win {
				wait(tok)
				win[i] = nil
			}
		}
		b.ReportMetric(dayFixes, "msgs/day")
		b.ReportMetric(float64(total), "B/day")
		b.ReportMetric(float64(total)/dayFixes, "B/fix")
	})
}

// BenchmarkLiveLatency: one fix at a time handed to the Outbox (as the
// agent does when a receiver cycle completes) until the broker has it.
// BatchAge -1 sends at once; the profile's (lte: 4.5s) trades latency for fewer
// messages on a live 1 Hz stream.
func BenchmarkLiveLatency(b *testing.B) {
	for _, age := range []time.Duration{-1, 0} {
		name := "age=immediate"
		if age == 0 {
			name = "age=profile"
		}
		b.Run(name, func(b *testing.B) {
			eachBrokerB(b, func(b *testing.B, start startFn) {
				br := start(b)
				obs := br.Observe(wire.Topic(testFleet, testDevice, "telemetry"))
				out := broker.NewOutbox()
				opts := testOptions(br.URL())
				opts.BatchAge = age
				if v := os.Getenv("KESTREL_BENCH_POLL"); v != "" {
					opts.Poll, _ = time.ParseDuration(v)
				}
				s := runSession(b, opts, out)
				waitFor(b, "connected", s.Connected)
				fixes := dayOfFixes(b, 1, max(b.N, 1))
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := range b.N {
					r := fixes[i]
					r.Time = time.Now().UnixMilli()
					t0 := time.Now()
					out.Add(r)
					if !obs.Wait(10*time.Second, func(m []broker.Message) bool { return len(m) > i }) {
						b.Fatal("fix never arrived")
					}
					lat = append(lat, obs.Messages()[i].At.Sub(t0))
				}
				b.StopTimer()
				reportPercentiles(b, lat)
			})
		})
	}
}

// BenchmarkEmergencyDuringDrain: while a day's backlog drains, an
// emergency is raised; the time until the broker has it.
func BenchmarkEmergencyDuringDrain(b *testing.B) {
	eachBrokerB(b, func(b *testing.B, start startFn) {
		br := start(b)
		obs := br.Observe(wire.Topic(testFleet, testDevice, "events"))
		tele := br.Observe(wire.Topic(testFleet, testDevice, "telemetry"))
		out := broker.NewOutbox()
		s := runSession(b, testOptions(br.URL()), out)
		waitFor(b, "connected", s.Connected)
		day := dayOfFixes(b, 1, dayFixes)
		var seq uint64 = 1
		lat := make([]time.Duration, 0, b.N)
		var behind int
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			recs := slices.Clone(day)
			for j := range recs {
				recs[j].Seq = seq
				seq++
			}
			t0 := tele.Len()
			out.Add(recs...)
			// Raise it once the drain is well under way.
			if !tele.Wait(30*time.Second, func(m []broker.Message) bool { return len(m) >= t0+20 }) {
				b.Fatal("drain did not start")
			}
			b.StartTimer()
			em := emergency(seq)
			seq++
			start := time.Now()
			out.Add(em)
			if !obs.Wait(10*time.Second, func(m []broker.Message) bool { return len(m) > i }) {
				b.Fatal("emergency never arrived")
			}
			lat = append(lat, obs.Messages()[i].At.Sub(start))
			b.StopTimer()
			if q, _ := out.Pending(); q > 0 {
				behind++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			if err := out.WaitEmpty(ctx); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		reportPercentiles(b, lat)
		b.ReportMetric(float64(behind)/float64(b.N), "backlog-left-frac")
	})
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "max-ms")
}
