package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// The golden vectors (testdata/vectors/vectors.json): payloads with the
// records they decode to, for every record kind and edge case, in both
// versions. docs/wire.md, these vectors and the Python reference decoder
// (reference/kestrel_wire.py) are the contract: a change to the encoding
// fails TestGoldenVectors until the vectors are regenerated with
//
//	go test ./transport/wire/ -run TestGoldenVectors -update-vectors
//
// and then the Python decoder fails (CI runs it) until the spec and it say
// the same.

var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/vectors/vectors.json")

const vectorsFile = "testdata/vectors/vectors.json"

type vector struct {
	Name    string            `json:"name"`
	Note    string            `json:"note"`
	Topic   string            `json:"topic"`
	Hex     string            `json:"hex"`
	Error   string            `json:"error,omitempty"` // "version" or "format": must be rejected
	Records []json.RawMessage `json:"records"`
}

type vectorCase struct {
	name, note string
	v1, v2     bool
	recs       []kestrel.Record
	raw        []byte // a hand-made payload instead of recs
	err        string
}

func vectorCases(t *testing.T) []vectorCase {
	tracks := map[string][]kestrel.Record{}
	for _, tr := range loadTracks(t) {
		tracks[tr.name] = tr.recs
	}
	nmeaTracks := map[string][]kestrel.Record{}
	for _, tr := range loadTracksNMEA(t) {
		nmeaTracks[tr.name] = tr.recs
	}
	devRecs := func(rs []kestrel.Record, dev string) []kestrel.Record {
		out := make([]kestrel.Record, len(rs))
		for i, r := range rs {
			out[i] = r
			out[i].Device = dev
		}
		return out
	}
	mixed := devRecs(mixedBatch(), "bwc-0042")
	// Southern and western hemispheres in a 4-decimal grid (NMEA
	// 3351.4080,S 15112.8900,E and 3451.2345,S 05822.1234,W).
	south := []kestrel.Record{
		{Envelope: kestrel.Envelope{Device: "bwc-0042", Boot: 2, Seq: 77, Time: 1700000000250, Priority: kestrel.PriorityHigh},
			Body: &kestrel.Position{Lat: -338568000, Lon: 1512148333, Alt: 5830, Speed: 0, Track: 0, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}},
		{Envelope: kestrel.Envelope{Device: "bwc-0042", Boot: 2, Seq: 78, Time: 1700000001250, Priority: kestrel.PriorityHigh},
			Body: &kestrel.Position{Lat: -348539083, Lon: -583687233, Alt: 5830, Speed: 0, Track: 0, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}},
	}
	// Extremes: every field at its limits, times before 1970 and far
	// ahead, seq wrapping, 360.00 degrees and above.
	rng := rand.New(rand.NewPCG(20, 2))
	var extremes []kestrel.Record
	for i := 0; i < 12; i++ {
		p := &kestrel.Position{
			Lat: []int32{math.MinInt32, math.MaxInt32, 0, -1, 900000000, -900000000}[rng.IntN(6)],
			Lon: []int32{math.MinInt32, math.MaxInt32, 0, 1, 1800000000, -1800000000}[rng.IntN(6)],
			Alt: []int32{math.MinInt32, math.MaxInt32, -1}[rng.IntN(3)], Speed: []int32{math.MinInt32, math.MaxInt32, 0}[rng.IntN(3)],
			Track: []uint16{0, 35999, 36000, 65535}[rng.IntN(4)], Mode: kestrel.FixMode(rng.IntN(256)),
			Sats: 255, HDOP: 65535, EPH: math.MaxUint32, EPV: 0, Coarsened: math.MaxUint32,
			Flags: kestrel.PosFlags(rng.IntN(128)),
		}
		env := kestrel.Envelope{Device: "bwc-0042", Boot: []uint32{0, math.MaxUint32}[rng.IntN(2)],
			Seq: []uint64{0, math.MaxUint64, 1 << 63}[rng.IntN(3)], Time: []int64{-62135596800000, 0, -1, 253402300799999}[rng.IntN(4)],
			Priority: kestrel.Priority(rng.IntN(4))}
		extremes = append(extremes, kestrel.Record{Envelope: env, Body: p})
	}
	gpsd := loadGpsdFixes(t, "testdata/gpsd/garmin-10x.fixes.jsonl")
	for i := range gpsd {
		gpsd[i].Device = "bwc-0042"
	}

	one := devRecs(tracks["santa-rosa-marathon-run"][2000:2001], "bwc-0042")
	cases := []vectorCase{
		{name: "single-fix", note: "one live fix: the smallest message", recs: one},
		{name: "run-30", note: "30 fixes at 1 Hz, speed and track predicted from the positions", recs: devRecs(tracks["santa-rosa-marathon-run"][3000:3030], "bwc-0042")},
		{name: "sailboat-grid3", note: "3 decimal minutes: lat/lon in the receiver's grid k=3", recs: devRecs(tracks["plaka-sailboat"][1000:1030], "bwc-0042")},
		{name: "static-grid4-nmea", note: "from the NMEA text, 4 decimal minutes (grid k=4), sats and hdop", recs: devRecs(nmeaTracks["amsterdam-static"][100:130], "bwc-0042")},
		{name: "car-gaps", note: "irregular 1-16 s gaps: time-scaled delta of delta", recs: devRecs(tracks["visnjan-car"][:30], "bwc-0042")},
		{name: "hike-11s", note: "11 s interval, decimetre altitudes", recs: devRecs(tracks["korita-zbevnica-hike"][200:230], "bwc-0042")},
		{name: "south-west-grid", note: "negative angles in the grid", recs: south},
		{name: "gpsd-missing-fields", note: "a real receiver's fixes with missing alt/speed/track", recs: gpsd},
		{name: "every-kind", note: "positions mixed with every other kind, boots, seqs and priorities", recs: mixed},
		{name: "extremes", note: "every field at its limits", recs: extremes},
		{name: "empty", note: "a batch of no records", recs: nil},
		{name: "live-10-1hz", note: "10 fixes 1 s apart, a narrowband message: the time column's step in whole seconds", recs: devRecs(consecutive(tracks["santa-rosa-marathon-run"], 10), "bwc-0042")},
		{name: "v1-every-kind", note: "version 1 payload (device in the payload)", v1: true, recs: mixed},
		{name: "v1-run-30", note: "version 1 payload", v1: true, recs: devRecs(tracks["santa-rosa-marathon-run"][3000:3030], "bwc-0042")},
	}
	// Version 2 (the encoding before version 3) of every version 3 case:
	// the payloads the earlier vectors held, still decoded.
	for _, c := range slices.Clone(cases) {
		if c.v1 {
			continue
		}
		c.name, c.note, c.v2 = "v2-"+c.name, "version 2 payload: "+c.note, true
		cases = append(cases, c)
	}
	bad := func(n uint32, v uint64, rest ...[]byte) []byte {
		b := msgp.AppendArrayHeader(nil, n)
		b = msgp.AppendUint64(b, v)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	var rc rcEncoder
	rc.reset()
	writeHeader(&rc, MaxRecords+1, 0, 0, 0)
	cases = append(cases,
		vectorCase{name: "unknown-version", note: "version 7 must be rejected as a version", raw: bad(2, 7, msgp.AppendBytes(nil, nil)), err: "version"},
		vectorCase{name: "count-too-large", note: "10001 records must be rejected", raw: bad(2, 2, msgp.AppendBytes(nil, rc.finish())), err: "format"},
		vectorCase{name: "bare-count-too-large", note: "a version 3 bare stream of 10001 records must be rejected", raw: msgp.AppendBytes(nil, rc.finish()), err: "format"},
	)
	return cases
}

// consecutive returns the first n fixes of recs that are each 1 s after
// the one before.
func consecutive(recs []kestrel.Record, n int) []kestrel.Record {
	for i := 0; i+n <= len(recs); i++ {
		ok := true
		for j := i + 1; j < i+n && ok; j++ {
			ok = recs[j].Time-recs[j-1].Time == 1000
		}
		if ok {
			return recs[i : i+n]
		}
	}
	return nil
}

func loadGpsdFixes(t *testing.T, path string) []kestrel.Record {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []kestrel.Record
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ts, p, err := ParseFixJSON(line)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, kestrel.Record{Envelope: kestrel.Envelope{Boot: 1, Seq: uint64(len(recs) + 1), Time: ts, Priority: kestrel.PriorityNormal}, Body: &p})
	}
	return recs
}

func buildVectors(t *testing.T) []vector {
	var enc Encoder
	var out []vector
	for _, c := range vectorCases(t) {
		v := vector{Name: c.name, Note: c.note, Topic: Topic("demo", "bwc-0042", "telemetry"), Error: c.err, Records: []json.RawMessage{}}
		payload := c.raw
		if payload == nil {
			var err error
			switch {
			case c.v1:
				payload, err = enc.AppendBatchV1(nil, "bwc-0042", c.recs)
			case c.v2:
				payload, err = enc.AppendBatchV2(nil, "bwc-0042", c.recs)
			default:
				payload, err = enc.AppendBatch(nil, "bwc-0042", c.recs)
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			for i := range c.recs {
				want := normalised(c.recs)
				want[i].Device = "bwc-0042"
				v.Records = append(v.Records, AppendJSON(nil, &want[i]))
			}
		}
		v.Hex = hex.EncodeToString(payload)
		out = append(out, v)
	}
	return out
}

func TestGoldenVectors(t *testing.T) {
	fresh := buildVectors(t)
	if *updateVectors {
		var b bytes.Buffer
		b.WriteString("{\"note\": \"Kestrel wire golden vectors: go test ./transport/wire/ -run TestGoldenVectors -update-vectors; docs/wire.md\",\n\"vectors\": [\n")
		for i, v := range fresh {
			line, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(line)
			if i < len(fresh)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString("]}\n")
		if err := os.WriteFile(vectorsFile, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []vector }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) != len(fresh) {
		t.Fatalf("%s holds %d vectors, the test makes %d: regenerate with -update-vectors", vectorsFile, len(file.Vectors), len(fresh))
	}
	for i, v := range file.Vectors {
		if v.Hex != fresh[i].Hex {
			t.Errorf("%s: the encoder's output changed: update docs/wire.md, the reference decoder and the vectors (-update-vectors)", v.Name)
		}
		payload, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := DecodeBatchTopic(v.Topic, payload)
		switch v.Error {
		case "version":
			if !errors.Is(err, ErrVersion) {
				t.Errorf("%s: %v, want ErrVersion", v.Name, err)
			}
			continue
		case "format":
			if !errors.Is(err, ErrFormat) {
				t.Errorf("%s: %v, want ErrFormat", v.Name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if len(recs) != len(v.Records) {
			t.Fatalf("%s: %d records, want %d", v.Name, len(recs), len(v.Records))
		}
		for j := range recs {
			if !sameJSON(AppendJSON(nil, &recs[j]), v.Records[j]) {
				t.Fatalf("%s record %d:\ngot  %s\nwant %s", v.Name, j, AppendJSON(nil, &recs[j]), v.Records[j])
			}
		}
	}
}

func sameJSON(a, b []byte) bool {
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestReferenceDecoder runs the Python reference decoder over the vectors
// when python3 with msgpack is installed (CI installs python3-msgpack and
// also runs it directly).
func TestReferenceDecoder(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	if exec.Command(py, "-c", "import msgpack").Run() != nil {
		t.Skip("python3 has no msgpack (Debian: python3-msgpack)")
	}
	out, err := exec.Command(py, "reference/kestrel_wire.py", "--vectors", vectorsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("reference decoder: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
