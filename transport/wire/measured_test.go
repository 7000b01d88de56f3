package wire

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

// measuredLog is one real receiver's log from testdata/measured: 1 Hz,
// speed and course measured by the receiver (see its README).
type measuredLog struct {
	name string
	recs []kestrel.Record
}

// loadMeasuredLogs reads testdata/measured through the GPS driver, as a
// device a year in service would stamp them (seq 31,536,000 on, boot 365,
// as the link budget does).
func loadMeasuredLogs(t testing.TB) []measuredLog {
	t.Helper()
	files, err := filepath.Glob("testdata/measured/*.log")
	if err != nil || len(files) < 20 {
		t.Fatalf("measured logs missing: %d files, %v", len(files), err)
	}
	var out []measuredLog
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		l := measuredLog{name: strings.TrimSuffix(filepath.Base(f), ".log")}
		_, err = nmea.Decode(fh, nmea.Options{}, func(fx nmea.Fix) error {
			p := fx.Pos
			l.recs = append(l.recs, kestrel.Record{
				Envelope: kestrel.Envelope{Device: "bwc-0042", Boot: 365, Seq: uint64(31_536_000 + len(l.recs)), Time: fx.Time, Priority: kestrel.PriorityNormal},
				Body:     &p,
			})
			return nil
		})
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, l)
	}
	return out
}

// mqttMessageCost is what one QoS 1 PUBLISH of payload bytes on topic
// costs on the MQTT stream beyond the payload, both ways: the fixed header
// and remaining length, the topic and its length, the packet id, and the
// 4-byte PUBACK (MQTT 3.1.1, 3.3 and 3.4).
func mqttMessageCost(topic string, payload int) int {
	rem := 2 + len(topic) + 2 + payload
	n := 1 + 1
	for rem >= 128 {
		n++
		rem >>= 7
	}
	return n + 2 + len(topic) + 2 + 4
}

// TestMeasuredLogs sends each measured log in batches of 10 (what the
// narrowband profile's 10 s bound holds at 1 Hz), checks that every
// record comes back identical, and reports payload bytes per fix and what
// the MQTT stream would carry per fix (payload plus mqttMessageCost on the
// link budget's topic), over all messages and over full messages of 10
// only (the steady state of a continuous stream; the logs are short, so
// their last message is partial):
//
//	go test ./transport/wire -run TestMeasuredLogs -v
func TestMeasuredLogs(t *testing.T) {
	const topic = "kestrel/v1/met/bwc-0042/telemetry"
	var enc Encoder
	var payload []byte
	var b strings.Builder
	fmt.Fprintf(&b, "| log | fixes | payload B/fix, batch 10 | MQTT stream B/fix | full messages: payload | full messages: stream |\n|---|---:|---:|---:|---:|---:|\n")
	var all, full [3]int // fixes, payload bytes, stream bytes
	for _, l := range loadMeasuredLogs(t) {
		var one, oneFull [3]int
		for i := 0; i < len(l.recs); i += 10 {
			batch := l.recs[i:min(i+10, len(l.recs))]
			var err error
			if payload, err = enc.AppendBatch(payload[:0], "bwc-0042", batch); err != nil {
				t.Fatal(err)
			}
			got, err := DecodeBatchFor("bwc-0042", payload)
			if err != nil {
				t.Fatalf("%s batch %d: %v", l.name, i/10, err)
			}
			for j := range got {
				if !equalRecord(&got[j], &batch[j]) {
					t.Fatalf("%s fix %d: decoded %+v, sent %+v", l.name, i+j, got[j].Body, batch[j].Body)
				}
			}
			row := [3]int{len(batch), len(payload), len(payload) + mqttMessageCost(topic, len(payload))}
			for k := range row {
				one[k] += row[k]
				if len(batch) == 10 {
					oneFull[k] += row[k]
				}
			}
		}
		for k := range one {
			all[k] += one[k]
			full[k] += oneFull[k]
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", l.name, one[0], perFix(one, oneFull))
	}
	fmt.Fprintf(&b, "| **all** | %d | %s |\n", all[0], perFix(all, full))
	t.Log("\n" + b.String())
	if p := os.Getenv("KESTREL_MEASURED_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func perFix(a, full [3]int) string {
	f := func(n, d int) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(n)/float64(d))
	}
	return fmt.Sprintf("%s | %s | %s | %s", f(a[1], a[0]), f(a[2], a[0]), f(full[1], full[0]), f(full[2], full[0]))
}
