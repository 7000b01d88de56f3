package linkbudget

import (
	"context"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/scenario"
)

// track is the real 1 Hz run track (transport/wire/testdata/tracks, from
// mpetazzoni/leaflet-gpx demo.gpx, BSD-2-Clause: see its header).
const track = "../../transport/wire/testdata/tracks/santa-rosa-marathon-run"

// result is one run's count.
type result struct {
	name   string
	prof   string
	tls    bool
	fixes  int
	counts Counts
	kinds  map[string]int // records at the platform by kind
}

func (r result) perFix(n int64) float64 { return float64(n) / float64(r.fixes) }

// TestAgentLinkBudget runs the real kestrel binary (the whole agent: GPS
// over a pseudo-terminal replaying the real track at 1 Hz in real time,
// the LTE modem simulator polled at the default 10 s, a fake battery and
// thermal zone read at the default minute, every fix reported) against
// mosquitto through the counting proxy, per link profile, and counts every
// byte both ways from the agent's start to its exit after SIGTERM: CONNECT,
// subscriptions, the birth and every state message, telemetry, events,
// config/reported, audit, PUBACKs, pings, the offline state and
// DISCONNECT. With KESTREL_AGENT_LINKBUDGET=1 it runs 10 minutes per
// profile, with TLS too, prints the table of docs/benchmarks.md ("Link
// budget of the whole agent") and fails when a profile is over its budget
// (lte 20, narrowband 10 B/fix):
//
//	make linkbudget
//
// Otherwise (not -short) it runs 60 s per profile without TLS and asserts
// only what does not depend on timing: every byte on the stream was
// sorted into a packet, and every fix replayed reached the platform.
func TestAgentLinkBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary for a minute")
	}
	long := os.Getenv("KESTREL_AGENT_LINKBUDGET") != ""
	run := 60 * time.Second
	if long {
		run = 10 * time.Minute
	}
	if d, err := time.ParseDuration(os.Getenv("KESTREL_AGENT_LINKBUDGET_FOR")); err == nil && d > 0 {
		run = d
	}
	nmea, err := os.ReadFile(track + ".nmea")
	if err != nil {
		t.Fatal(err)
	}
	fixes, err := os.ReadFile(track + ".fixes.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := scenario.Binary(t.TempDir(), runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	type runSpec struct {
		prof string
		tls  bool
	}
	specs := []runSpec{{"lte", false}, {"narrowband", false}}
	if long {
		specs = append(specs, runSpec{"lte", true}, runSpec{"narrowband", true})
	}
	var mu sync.Mutex
	var results []result
	t.Run("runs", func(t *testing.T) {
		for _, sp := range specs {
			name := sp.prof
			if sp.tls {
				name += ", TLS 1.3"
			}
			t.Run(strings.ReplaceAll(name, ", ", "_"), func(t *testing.T) {
				t.Parallel()
				r := measure(t, bin, nmea, fixes, sp.prof, sp.tls, run)
				r.name = name
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
	})
	if len(results) == 0 {
		return
	}
	table := render(results, run)
	t.Log("\n" + table)
	if p := os.Getenv("KESTREL_LINKBUDGET_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !long {
		return
	}
	for _, r := range results {
		limit := map[string]float64{"lte": 20, "narrowband": 10}[r.prof]
		if per := r.perFix(r.counts.Up + r.counts.Down); !r.tls && per > limit {
			t.Errorf("%s: the whole agent costs %.2f B/fix on the MQTT stream, over the budget of %.0f", r.name, per, limit)
		}
	}
}

// measure runs one agent for d through the counting proxy.
func measure(t *testing.T, bin []string, nmea, fixes []byte, prof string, tlsOn bool, d time.Duration) result {
	var opts []broker.Option
	var ca *broker.CA
	if tlsOn {
		ca = broker.NewCA(t)
		opts = append(opts, broker.WithTLS(ca))
	}
	e := scenario.New(t, scenario.Options{
		Command: bin, Track: nmea, Fixes: fixes, Speed: 1,
		Radio: kestrel.ProfileLTE, Sensors: true, Broker: opts,
		Edit: func(c *config.Config) {
			// The agent as shipped, but for the site's ports: the
			// profile's batch ages, the default polls and periods.
			// Tracking stays off (every fix reported), as in the
			// transport-level budget.
			def := config.Defaults()
			c.Broker.Profile = prof
			c.Broker.BatchAge = def.Broker.BatchAge
			c.Spool.SyncInterval = def.Spool.SyncInterval
			c.Radio.Poll = def.Radio.Poll
			c.Sensors.BatteryPeriod, c.Sensors.ThermalPeriod = def.Sensors.BatteryPeriod, def.Sensors.ThermalPeriod
			c.Hooks.LinkPeriod = def.Hooks.LinkPeriod
			if d, err := time.ParseDuration(os.Getenv("KESTREL_LINKBUDGET_STATE_INTERVAL")); err == nil {
				// The test of the test: state_interval = 1m is the
				// agent before the state schedule (a state message
				// every minute whatever the profile).
				c.Broker.StateInterval = config.D(d)
			}
		},
	})
	px := Start(t, e.Broker.Addr(), tlsOn)
	c := e.Config
	c.Broker.URLs = []string{"tcp://" + px.Addr()}
	if tlsOn {
		c.Broker.URLs = []string{"tls://" + px.Addr()}
		c.Broker.CAFile = ca.CAFile
		c.Broker.CertFile, c.Broker.KeyFile = ca.IssueClient(t, "car-17")
	}
	e.WriteConfig(c)
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	e.Start()
	// The replay runs on past the count, so that the receiver does not
	// go silent (a state message of its own) before the agent stops.
	rctx, stopReplay := context.WithCancel(ctx)
	replay := e.StartReplay(rctx)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	// SIGTERM: the agent drains for up to 5 s, says offline and
	// disconnects; all of it is counted.
	e.Stop()
	stopReplay()
	<-replay
	p := e.Platform()
	if errs := p.Errors(); len(errs) > 0 {
		t.Errorf("%d payloads did not decode, first: %v", len(errs), errs[0])
	}
	if gaps := p.Gaps(); len(gaps) > 0 {
		t.Errorf("sequence gaps: %v", gaps)
	}
	if n, want := scenario.Positions(p), int(d/time.Second)*9/10; n < want {
		t.Errorf("%d positions at the platform, want at least %d", n, want)
	}
	if left, err := scenario.SpoolDepth(e.Config.Spool.Dir); err == nil && left > 0 {
		// Durable, sent at the next start: records that were waiting
		// for their batch when the agent stopped (the shutdown drain
		// is bounded at 5 s; narrowband's normal batch age is 9.5 s).
		t.Logf("%d records left in the spool for the next start", left)
	}
	if os.Getenv("KESTREL_LINKBUDGET_STATES") != "" {
		prev := map[string]any{}
		for _, st := range e.States() {
			var diff []string
			for k, v := range st {
				if fmt.Sprint(prev[k]) != fmt.Sprint(v) {
					diff = append(diff, fmt.Sprintf("%s=%v", k, v))
				}
			}
			t.Logf("state: %v", diff)
			prev = st
		}
	}
	r := result{prof: prof, tls: tlsOn, fixes: scenario.Positions(p), counts: px.Counts(), kinds: map[string]int{}}
	for _, a := range p.Unique() {
		r.kinds[a.Record.Kind().String()]++
	}
	if r.counts.Unparsed != "" {
		t.Errorf("the stream did not parse: %s", r.counts.Unparsed)
	}
	if sum := r.counts.Sum(); sum != r.counts.Up+r.counts.Down {
		t.Errorf("%d bytes sorted into packets of %d on the stream", sum, r.counts.Up+r.counts.Down)
	}
	if r.fixes == 0 {
		t.Fatal("no fix reached the platform")
	}
	return r
}

// render prints the totals and, per plaintext run, the breakdown by
// channel (each channel's PUBLISH and the PUBACKs answering it).
func render(rs []result, d time.Duration) string {
	var b strings.Builder
	byName := map[string]result{}
	for _, r := range rs {
		byName[r.name] = r
	}
	fmt.Fprintf(&b, "Whole agent, %v per run, every byte both ways from start to exit:\n\n", d)
	fmt.Fprintf(&b, "| run | fixes at the platform | B/fix both ways | up | down | TLS records |\n|---|---:|---:|---:|---:|---:|\n")
	for _, n := range []string{"lte", "narrowband", "lte, TLS 1.3", "narrowband, TLS 1.3"} {
		r, ok := byName[n]
		if !ok {
			continue
		}
		recs := "-"
		if r.tls {
			recs = fmt.Sprint(r.counts.Records)
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f | %d | %d | %s |\n", n, r.fixes, r.perFix(r.counts.Up+r.counts.Down), r.counts.Up, r.counts.Down, recs)
	}
	for _, n := range []string{"lte", "narrowband"} {
		r, ok := byName[n]
		if !ok {
			continue
		}
		if tr, ok := byName[n+", TLS 1.3"]; ok {
			fmt.Fprintf(&b, "\nTLS 1.3 overhead, %s: %+.2f B/fix (%d records)\n", n, tr.perFix(tr.counts.Up+tr.counts.Down)-r.perFix(r.counts.Up+r.counts.Down), tr.counts.Records)
		}
		fmt.Fprintf(&b, "\nBreakdown, %s (%d fixes):\n\n| channel | bytes | B/fix | packets |\n|---|---:|---:|---:|\n", n, r.fixes)
		ch := map[string][2]int64{}
		for cat, n := range r.counts.Bytes {
			k := cat
			if i := strings.Index(cat, " publish "); i > 0 {
				k = cat[:i]
			} else if i := strings.Index(cat, " puback "); i > 0 {
				k = cat[:i]
			}
			v := ch[k]
			v[0] += n
			v[1] += r.counts.Packets[cat]
			ch[k] = v
		}
		grouped := Counts{Bytes: map[string]int64{}}
		for k, v := range ch {
			grouped.Bytes[k] = v[0]
		}
		for _, k := range grouped.Sorted() {
			fmt.Fprintf(&b, "| %s (with its PUBACKs) | %d | %.2f | %d |\n", k, ch[k][0], r.perFix(ch[k][0]), ch[k][1])
		}
		kinds := slices.Sorted(maps.Keys(r.kinds))
		fmt.Fprintf(&b, "\nRecords at the platform, %s:", n)
		for _, k := range kinds {
			fmt.Fprintf(&b, " %s %d;", k, r.kinds[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}
