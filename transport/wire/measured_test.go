package wire

import (
	"fmt"
	"os"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
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
	return readNMEAFiles(t, "testdata/measured/*.log", 20, 365, 31_536_000)
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
	// Where a full message's bits go: each column (colBits, about), and
	// the rest of the payload (msgp bin header, stream header, coder).
	var cols [numCols]int
	var fullMsgs int
	for _, l := range loadMeasuredLogs(t) {
		var one, oneFull [3]int
		for i := 0; i < len(l.recs); i += 10 {
			batch := l.recs[i:min(i+10, len(l.recs))]
			var err error
			before := cols
			if len(batch) == 10 {
				enc.colBits = &cols
			}
			payload, err = enc.AppendBatch(payload[:0], "bwc-0042", batch)
			enc.colBits = nil
			if err != nil {
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
			if len(batch) < 10 {
				cols = before
			} else {
				fullMsgs++
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
	// The bits of a full message of 10 fixes, by part.
	fmt.Fprintf(&b, "\n| part of a full message (10 fixes) | bits |\n|---|---:|\n")
	colSum := 0
	for c := range cols {
		colSum += cols[c]
		if cols[c] > 0 {
			fmt.Fprintf(&b, "| column %s | %.1f |\n", colNames[c], float64(cols[c])/float64(fullMsgs))
		}
	}
	msgBits := float64(full[1]) * 8 / float64(fullMsgs)
	fmt.Fprintf(&b, "| msgp bin header, stream header (count, boot, seq, time), coder flush | %.1f |\n", msgBits-float64(colSum)/float64(fullMsgs))
	fmt.Fprintf(&b, "| payload | %.1f |\n| MQTT (PUBLISH header, topic, packet id, PUBACK) | %.1f |\n", msgBits, float64(full[2]-full[1])*8/float64(fullMsgs))
	// What-ifs that this encoder does not do, for the decisions they need
	// (docs/wire.md, "Measured speed and course"): a shorter telemetry
	// channel (a topic every subscriber would have to learn), and
	// positions without the quality fields (sats, hdop, eph, epv), which
	// DESIGN's lossless list does not name but the platform stores.
	var short, noQ [3]int
	for _, l := range loadMeasuredLogs(t) {
		for i := 0; i+10 <= len(l.recs); i += 10 {
			batch := l.recs[i : i+10]
			p, err := enc.AppendBatch(payload[:0], "bwc-0042", batch)
			if err != nil {
				t.Fatal(err)
			}
			short[0] += 10
			short[2] += len(p) + mqttMessageCost("kestrel/v1/met/bwc-0042/t", len(p))
			stripped := make([]kestrel.Record, len(batch))
			for j := range batch {
				q := *batch[j].Body.(*kestrel.Position)
				q.Flags &^= kestrel.HasSats | kestrel.HasHDOP | kestrel.HasEPH | kestrel.HasEPV
				stripped[j] = batch[j]
				stripped[j].Body = &q
			}
			if p, err = enc.AppendBatch(payload[:0], "bwc-0042", stripped); err != nil {
				t.Fatal(err)
			}
			noQ[0] += 10
			noQ[1] += len(p)
			noQ[2] += len(p) + mqttMessageCost(topic, len(p))
		}
	}
	fmt.Fprintf(&b, "\n| what-if, full messages | MQTT stream B/fix |\n|---|---:|\n")
	fmt.Fprintf(&b, "| as sent (above) | %.2f |\n", float64(full[2])/float64(full[0]))
	fmt.Fprintf(&b, "| channel `t` instead of `telemetry` (8 bytes less topic a message) | %.2f |\n", float64(short[2])/float64(short[0]))
	fmt.Fprintf(&b, "| without sats, hdop, eph, epv (lossy: not sent) | %.2f |\n", float64(noQ[2])/float64(noQ[0]))
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

var colNames = [numCols]string{"flags", "time", "lat", "lon", "alt", "speed", "track", "mode", "seq", "boot", "priority", "sats", "hdop", "eph", "epv", "coarsened"}
