package wire

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

// track is one real recorded track from testdata/tracks (see its README).
type track struct {
	name  string
	lines [][]byte // the fixes.jsonl lines, as recorded
	recs  []kestrel.Record
}

func loadTracks(t testing.TB) []track {
	t.Helper()
	files, err := filepath.Glob("testdata/tracks/*.fixes.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no tracks in testdata/tracks: %v", err)
	}
	var out []track
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := track{name: strings.TrimSuffix(filepath.Base(f), ".fixes.jsonl")}
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
			tr.lines = append(tr.lines, append([]byte(nil), line...))
			tr.recs = append(tr.recs, kestrel.Record{
				Envelope: kestrel.Envelope{Device: "bwc-0042", Boot: 7, Seq: uint64(1000 + len(tr.recs)), Time: ts, Priority: kestrel.PriorityNormal},
				Body:     &p,
			})
		}
		out = append(out, tr)
	}
	return out
}

// loadTracksNMEA reads the same tracks from their .nmea files through the
// GPS driver: the records the agent sends, exact to the NMEA text (the
// .fixes.jsonl of some tracks print fewer decimals than the receiver sent).
func loadTracksNMEA(t testing.TB) []track {
	t.Helper()
	var out []track
	for _, l := range readNMEAFiles(t, "testdata/tracks/*.nmea", 1, 7, 1000) {
		out = append(out, track{name: l.name, recs: l.recs})
	}
	return out
}

// readNMEAFiles reads every file matching pattern (at least min) through
// the GPS driver into records of device bwc-0042 with boot and seqs from
// seq0, one list per file named by its base name less its extension.
func readNMEAFiles(t testing.TB, pattern string, min int, boot uint32, seq0 uint64) []measuredLog {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) < min {
		t.Fatalf("%s: %d files, want at least %d: %v", pattern, len(files), min, err)
	}
	var out []measuredLog
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		l := measuredLog{name: strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))}
		_, err = nmea.Decode(fh, nmea.Options{}, func(fx nmea.Fix) error {
			p := fx.Pos
			l.recs = append(l.recs, kestrel.Record{
				Envelope: kestrel.Envelope{Device: "bwc-0042", Boot: boot, Seq: seq0 + uint64(len(l.recs)), Time: fx.Time, Priority: kestrel.PriorityNormal},
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

// fixFloats is a fix as the JSON says it, for comparing with tolerances.
type fixFloats struct {
	time              string
	lat, lon          float64
	alt, speed, track *float64
	mode              float64
}

func TestRoundTripTracks(t *testing.T) {
	var enc Encoder
	for _, tr := range loadTracks(t) {
		for _, n := range []int{1, 10, 30, 60} {
			var got []kestrel.Record
			for i := 0; i < len(tr.recs); i += n {
				j := min(i+n, len(tr.recs))
				payload, err := enc.AppendBatch(nil, "bwc-0042", tr.recs[i:j])
				if err != nil {
					t.Fatal(err)
				}
				recs, err := DecodeBatchFor("bwc-0042", payload)
				if err != nil {
					t.Fatalf("%s batch %d at %d: %v", tr.name, n, i, err)
				}
				got = append(got, recs...)
			}
			if len(got) != len(tr.recs) {
				t.Fatalf("%s: %d records back, sent %d", tr.name, len(got), len(tr.recs))
			}
			for i := range got {
				want := tr.recs[i]
				if !equalRecord(&got[i], &want) {
					t.Fatalf("%s batch %d record %d: got %+v %+v, want %+v %+v", tr.name, n, i,
						got[i].Envelope, got[i].Body, want.Envelope, want.Body)
				}
				// The decoded fix, printed, must match the recorded JSON
				// within DESIGN.md's tolerances.
				line := AppendFixJSON(nil, got[i].Time, got[i].Body.(*kestrel.Position))
				if msg := compareFixJSON(tr.lines[i], line); msg != "" {
					t.Fatalf("%s record %d: %s\nwant %s\ngot  %s", tr.name, i, msg, tr.lines[i], line)
				}
			}
		}
	}
}

func equalRecord(a, b *kestrel.Record) bool {
	if a.Envelope != b.Envelope {
		return false
	}
	pa, ok1 := a.Body.(*kestrel.Position)
	pb, ok2 := b.Body.(*kestrel.Position)
	if ok1 && ok2 {
		return *pa == *pb
	}
	return false
}

// compareFixJSON checks got against want within DESIGN.md's "lossless":
// 1e-7 deg, 0.1 m alt, 0.01 m/s speed, 0.01 deg track, time to the ms.
func compareFixJSON(want, got []byte) string {
	w, err := floatsOf(want)
	if err != nil {
		return "want: " + err.Error()
	}
	g, err := floatsOf(got)
	if err != nil {
		return "got: " + err.Error()
	}
	if w.time != g.time {
		return "time differs"
	}
	// A hair of slack on each bound absorbs binary floating point in the
	// comparison itself, not in the codec.
	if math.Abs(w.lat-g.lat) > 1e-7+1e-12 || math.Abs(w.lon-g.lon) > 1e-7+1e-12 {
		return "lat/lon beyond 1e-7 deg"
	}
	if !within(w.alt, g.alt, 0.1) {
		return "alt beyond 0.1 m"
	}
	if !within(w.speed, g.speed, 0.01) {
		return "speed beyond 0.01 m/s"
	}
	if !within(w.track, g.track, 0.01) {
		return "track beyond 0.01 deg"
	}
	if w.mode != g.mode {
		return "mode differs"
	}
	return ""
}

func within(a, b *float64, tol float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return math.Abs(*a-*b) <= tol+1e-9
}
