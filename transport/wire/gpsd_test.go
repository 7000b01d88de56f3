package wire

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestRoundTripGpsdFixes sends the fixes gpsd reports for the 81 logs of
// its regression suite (testdata/gpsd: real receivers, 1 to 10 Hz, with
// alt, speed or track missing in many cycles) through batches of 30 and
// checks every decoded fix against the recorded JSON within DESIGN.md's
// tolerances.
func TestRoundTripGpsdFixes(t *testing.T) {
	files, err := filepath.Glob("testdata/gpsd/*.fixes.jsonl")
	if err != nil || len(files) < 80 {
		t.Fatalf("gpsd fixes missing: %d files, %v", len(files), err)
	}
	var enc Encoder
	var payload []byte
	totalBytes, totalFixes := 0, 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var lines [][]byte
		var recs []kestrel.Record
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			ts, p, err := ParseFixJSON(line)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			lines = append(lines, append([]byte(nil), line...))
			recs = append(recs, kestrel.Record{Envelope: kestrel.Envelope{Boot: 1, Seq: uint64(len(recs) + 1), Time: ts, Priority: kestrel.PriorityNormal}, Body: &p})
		}
		for i := 0; i < len(recs); i += 30 {
			batch := recs[i:min(i+30, len(recs))]
			if payload, err = enc.AppendBatch(payload[:0], "kestrelctl", batch); err != nil {
				t.Fatal(err)
			}
			totalBytes += len(payload)
			_, got, err := DecodeBatch(payload)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for j := range got {
				line := AppendFixJSON(nil, got[j].Time, got[j].Body.(*kestrel.Position))
				if msg := compareFixJSON(lines[i+j], line); msg != "" {
					t.Fatalf("%s fix %d: %s\nwant %s\ngot  %s", f, i+j, msg, lines[i+j], line)
				}
			}
		}
		totalFixes += len(recs)
	}
	t.Logf("%d files, %d fixes, %.2f bytes per fix in batches of 30", len(files), totalFixes, float64(totalBytes)/float64(totalFixes))
}
