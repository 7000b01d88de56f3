package scenario

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/hwtest/platform"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// BenchmarkLiveLatency measures, for live data, the time from the last
// byte of a fix's sentences on the serial line to the broker accepting the
// message that carries it: the real binary, a pseudo-terminal, mosquitto.
// One op is one fix at 10 Hz; p50 and p99 are reported as metrics.
//
//	go test ./hwtest/scenario -run '^$' -bench LiveLatency -benchtime 300x
func BenchmarkLiveLatency(b *testing.B) {
	for _, age := range []time.Duration{0, 100 * time.Millisecond} {
		name := "batch_age=profile(lte 4.5s)"
		if age > 0 {
			name = "batch_age=" + age.String()
		}
		b.Run(name, func(b *testing.B) { liveLatency(b, age) })
	}
}

func liveLatency(b *testing.B, age time.Duration) {
	buildOnce.Do(func() { native, buildErr = Binary(binDir, "amd64") })
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	brk := broker.StartMosquitto(b)
	obs := brk.Observe("kestrel/v1/+/+/telemetry")
	p, err := pty.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	dir := b.TempDir()
	c := config.Defaults()
	c.Device.ID, c.Device.Fleet = "lat-1", "bench"
	c.Broker.URLs = []string{brk.URL()}
	c.Broker.BatchAge = config.D(age)
	c.Spool.Dir = filepath.Join(dir, "spool")
	c.Remote.StateFile = filepath.Join(dir, "remote.json")
	c.Remote.RequireSigned = false
	c.GPS.Port, c.GPS.Baud = p.Path, 9600
	c.Tracking = config.Tracking{}
	c.Hooks.Socket = ""
	c.Status.Socket = ""
	c.Sensors.BatteryPeriod, c.Sensors.ThermalPeriod = config.D(0), config.D(0)
	var buf strings.Builder
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		b.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "kestrel.toml")
	if err := os.WriteFile(cfgPath, []byte(buf.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	e := &Env{t: b, opts: Options{Command: native}, Dir: dir, ConfigPath: cfgPath, Config: c}
	logs, _ := os.Create(filepath.Join(dir, "agent.log"))
	defer logs.Close()
	e.logs = logs
	e.Start()
	defer e.Stop()
	for {
		if baud, _ := p.Baud(); baud == 9600 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	sent := map[int64]time.Time{}
	b.ResetTimer()
	start := time.Now().Truncate(time.Second).Add(time.Second)
	for i := 0; i < b.N; i++ {
		fix := start.Add(time.Duration(i) * 100 * time.Millisecond)
		time.Sleep(time.Until(fix))
		p.Write([]byte(cycle(fix, i)))
		sent[fix.UnixMilli()] = time.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lat []time.Duration
	for ctx.Err() == nil {
		lat = lat[:0]
		plat := platform.Collect(nil)
		for _, m := range obs.Messages() {
			plat.Add(m.Topic, m.Payload, m.At)
		}
		for _, a := range plat.Unique() {
			if a.Record.Kind() != kestrel.KindPosition {
				continue
			}
			if t0, ok := sent[a.Record.Time]; ok {
				lat = append(lat, a.Arrived.Sub(t0))
			}
		}
		if len(lat) >= max(b.N-1, 1) { // the last cycle may end only with the next
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()
	if len(lat) == 0 {
		b.Fatal("no fix arrived")
	}
	slices.Sort(lat)
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat)), "fixes")
}

// cycle is one receiver cycle (RMC then GGA) for a fix at t, moving north.
func cycle(t time.Time, i int) string {
	t = t.UTC()
	hms := fmt.Sprintf("%02d%02d%02d.%02d", t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/1e7)
	lat := fmt.Sprintf("5130.%05d", 10000+i%80000)
	rmc := fmt.Sprintf("GPRMC,%s,A,%s,N,00007.20000,W,12.5,45.0,%s,,,A", hms, lat, t.Format("020106"))
	gga := fmt.Sprintf("GPGGA,%s,%s,N,00007.20000,W,1,09,0.9,35.2,M,47.0,M,,", hms, lat)
	return sentence(rmc) + sentence(gga)
}

func sentence(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X\r\n", body, sum)
}
