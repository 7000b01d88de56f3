package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// mixedBatch is a batch as the agent builds it from a drained backlog:
// positions interleaved with every other kind, two boots, gaps in seq,
// every priority, positions with and without their optional fields.
func mixedBatch() []kestrel.Record {
	env := func(boot uint32, seq uint64, t int64, p kestrel.Priority) kestrel.Envelope {
		return kestrel.Envelope{Device: "car-17", Boot: boot, Seq: seq, Time: t, Priority: p}
	}
	const t0 = 1560938662000
	full := kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP | kestrel.HasEPH | kestrel.HasEPV
	return []kestrel.Record{
		{Envelope: env(3, 900, t0-60000, kestrel.PriorityBulk), Body: &kestrel.Position{Lat: 515000000, Lon: -1200000, Alt: 3520, Speed: 130, Track: 27150, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}},
		{Envelope: env(3, 901, t0-59000, kestrel.PriorityEmergency), Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "firmware", Name: "button", Value: 1, Text: "officer \"needs\" help\n"}},
		{Envelope: env(3, 902, t0-59000, kestrel.PriorityBulk), Body: &kestrel.Position{Lat: 515000123, Lon: -1200456, Mode: kestrel.Fix2D}},
		{Envelope: env(4, 1, t0, kestrel.PriorityNormal), Body: &kestrel.Position{Lat: -337000000, Lon: 1511000000, Alt: -1250, Speed: 2500, Track: 35999, Mode: kestrel.Fix3D, Sats: 11, HDOP: 87, EPH: 350, EPV: 720, Coarsened: 100, Flags: full}},
		{Envelope: env(4, 2, t0+5, kestrel.PriorityNormal), Body: &kestrel.GPSStatus{State: kestrel.GPSFix, Mode: kestrel.Fix3D, SatsInView: 14, SatsUsed: 11, PDOP: 150, HDOP: 87, VDOP: 120, Sentences: 123456, BadFrames: 3, NoiseBytes: 17}},
		{Envelope: env(4, 3, t0+6, kestrel.PriorityHigh), Body: &kestrel.RadioStatus{Profile: kestrel.ProfileTETRA, Registered: kestrel.RegHome, Online: true, RSSI: -85, BER: 99, Mode: kestrel.ModeTMO, Identity: "2351234", Talkgroup: "9001"}},
		{Envelope: env(4, 4, t0+7, kestrel.PriorityNormal), Body: &kestrel.RadioStatus{Profile: kestrel.ProfileLTE, Registered: kestrel.RegRoaming, Online: true, RSSI: -71, RSRP: -98, RSRQ: -105, Operator: "ESN", AccessTech: 7, TAC: 0x1a2b, CellID: 0x0badcafe, IMEI: "356938035643809", ICCID: "8944500102198304826"}},
		{Envelope: env(4, 5, t0+8, kestrel.PriorityBulk), Body: &kestrel.Accel{X: -120, Y: 9810, Z: 15}},
		{Envelope: env(4, 6, t0+9, kestrel.PriorityBulk), Body: &kestrel.Battery{Capacity: 87, Status: "Discharging", VoltageMV: 3912, TempDeciC: -55, HasTemp: true}},
		{Envelope: env(4, 7, t0+10, kestrel.PriorityBulk), Body: &kestrel.Thermal{Zone: "cpu-thermal", MilliC: 48312}},
		{Envelope: env(4, 8, t0+1000, kestrel.PriorityNormal), Body: &kestrel.Position{Lat: -337000250, Lon: 1511000300, Alt: -1240, Speed: 2510, Track: 10, Mode: kestrel.Fix3D, Sats: 12, HDOP: 80, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack | kestrel.HasSats | kestrel.HasHDOP}},
		{Envelope: env(4, 9, t0+1100, kestrel.PriorityNormal), Body: &kestrel.LinkUsage{Iface: "wwan0", Source: "ebpf", IntervalMS: 60000, RxBytes: 1 << 40, TxBytes: 12345, RxPackets: 99, TxPackets: 98, Drops: 1}},
		{Envelope: env(4, 10, t0+1200, kestrel.PriorityHigh), Body: &kestrel.ExecAudit{Path: "/tmp/x", PID: 4242, PPID: 1, UID: 0, ParentComm: "sh", Allowed: false}},
		{Envelope: env(4, 11, t0+2000, kestrel.PriorityNormal), Body: &kestrel.Position{Lat: -337000500, Lon: 1511000600, Speed: 2490, Mode: kestrel.Fix2D, Flags: kestrel.HasSpeed}},
		{Envelope: env(4, 1<<40, t0+3000, kestrel.PriorityNormal), Body: &kestrel.Position{Lat: 900000000, Lon: -1800000000, Alt: 884800, Track: 36000, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt | kestrel.HasTrack}},
	}
}

func TestMixedBatchRoundTrip(t *testing.T) {
	want := mixedBatch()
	var enc Encoder
	payload, err := enc.AppendBatch(nil, "car-17", want)
	if err != nil {
		t.Fatal(err)
	}
	dev, got, err := DecodeBatch(payload)
	if err != nil {
		t.Fatal(err)
	}
	if dev != "" {
		t.Errorf("version 3 payload names device %q", dev)
	}
	if got, err = DecodeBatchFor("car-17", payload); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		for i := range want {
			if i >= len(got) || !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("record %d: got %+v %+v\nwant %+v %+v", i, got[i].Envelope, got[i].Body, want[i].Envelope, want[i].Body)
			}
		}
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	// A generic msgpack reader sees the version first.
	var js bytes.Buffer
	if _, err := msgp.UnmarshalAsJSON(&js, payload); err != nil || !strings.HasPrefix(js.String(), "[3,\"") {
		t.Errorf("generic msgpack view: %v %.40s", err, js.String())
	}
}

func TestEmptyAndSingleBatches(t *testing.T) {
	var enc Encoder
	for _, recs := range [][]kestrel.Record{nil, mixedBatch()[:1], mixedBatch()[1:2]} {
		p, err := enc.AppendBatch(nil, "car-17", recs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatchFor("car-17", p)
		if err != nil || len(got) != len(recs) {
			t.Fatalf("%d records: got %d, %v", len(recs), len(got), err)
		}
		if len(recs) > 0 && !reflect.DeepEqual(got, recs) {
			t.Fatalf("got %+v, want %+v", got, recs)
		}
	}
}

func TestAbsentFieldsDecodeAsZero(t *testing.T) {
	// Values whose Has* flag is clear are not carried (documented).
	in := []kestrel.Record{{Envelope: kestrel.Envelope{Seq: 1, Time: 1}, Body: &kestrel.Position{Lat: 1, Lon: 2, Alt: 99, Speed: 5, Track: 7, Sats: 4, Mode: kestrel.Fix2D}}}
	var enc Encoder
	p, err := enc.AppendBatch(nil, "d", in)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := DecodeBatch(p)
	if err != nil {
		t.Fatal(err)
	}
	want := kestrel.Position{Lat: 1, Lon: 2, Mode: kestrel.Fix2D}
	if *got[0].Body.(*kestrel.Position) != want {
		t.Fatalf("got %+v, want %+v", got[0].Body, want)
	}
}

func TestEncodeRejects(t *testing.T) {
	var enc Encoder
	cases := map[string][]kestrel.Record{
		"no body":      {{}},
		"nil position": {{Body: (*kestrel.Position)(nil)}},
		"other device": {{Envelope: kestrel.Envelope{Device: "someone-else"}, Body: &kestrel.Accel{}}},
		"too many":     make([]kestrel.Record, MaxRecords+1),
	}
	for name, recs := range cases {
		if _, err := enc.AppendBatch(nil, "car-17", recs); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
	if _, err := AppendRecord(nil, &kestrel.Record{}); !errors.Is(err, ErrKind) {
		t.Errorf("record without body: %v", err)
	}
}

func TestVersionRejected(t *testing.T) {
	var enc Encoder
	batch, _ := enc.AppendBatch(nil, "car-17", mixedBatch())
	rec, _ := AppendRecord(nil, &mixedBatch()[1])
	for name, b := range map[string][]byte{"batch": batch, "record": rec} {
		b = append([]byte(nil), b...)
		if b[1] != Version && b[1] != recordVersion {
			t.Fatalf("%s: version is not the second byte", name)
		}
		b[1] = 7
		_, _, errB := DecodeBatch(b)
		_, errR := DecodeRecord(b)
		for _, err := range []error{errB, errR} {
			if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 7") {
				t.Errorf("%s: %v, want ErrVersion naming version 7", name, err)
			}
		}
	}
}

func TestDecodeRejectsAbsurdCount(t *testing.T) {
	b := msgp.AppendArrayHeader(nil, batchFields)
	b = msgp.AppendUint(b, version1)
	b = msgp.AppendString(b, "d")
	b = msgp.AppendUint32(b, MaxRecords+1)
	b = msgp.AppendUint32(b, 0)
	b = msgp.AppendUint64(b, 0)
	b = msgp.AppendInt64(b, 0)
	b = msgp.AppendBytes(b, nil)
	b = msgp.AppendArrayHeader(b, 0)
	if _, _, err := DecodeBatch(b); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("version 1, count %d: %v", MaxRecords+1, err)
	}
	var rc rcEncoder
	rc.reset()
	writeHeader(&rc, MaxRecords+1, 0, 0, 0)
	b = msgp.AppendArrayHeader(nil, 2)
	b = msgp.AppendUint(b, Version)
	b = msgp.AppendBytes(b, rc.finish())
	if _, _, err := DecodeBatch(b); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("version 2, count %d: %v", MaxRecords+1, err)
	}
}

func TestDecodeTruncatedAndTrailing(t *testing.T) {
	var enc Encoder
	batch, _ := enc.AppendBatch(nil, "car-17", mixedBatch())
	for i := 0; i < len(batch); i++ {
		if _, _, err := DecodeBatch(batch[:i]); err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
	}
	if _, _, err := DecodeBatch(append(batch[:len(batch):len(batch)], 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	two := append(append([]byte(nil), batch...), batch...)
	p, rest, err := SplitBatch(two)
	if err != nil || !bytes.Equal(p, batch) || !bytes.Equal(rest, batch) {
		t.Fatalf("SplitBatch: %v", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range mixedBatch() {
		b, err := AppendRecord(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", r.Kind(), err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v %+v, want %+v %+v", got.Envelope, got.Body, r.Envelope, r.Body)
		}
		for i := 0; i < len(b); i++ {
			if _, err := DecodeRecord(b[:i]); err == nil {
				t.Fatalf("%s: prefix of %d bytes decoded", r.Kind(), i)
			}
		}
	}
}

func TestEncodeAllocatesNothing(t *testing.T) {
	tr := loadTracks(t)[0]
	recs := append(tr.recs[:30:30], mixedBatch()...)
	for i := range recs {
		recs[i].Device = ""
	}
	var enc Encoder
	buf, err := enc.AppendBatch(nil, "car-17", recs)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { buf, _ = enc.AppendBatch(buf[:0], "car-17", recs) }); n != 0 {
		t.Errorf("AppendBatch: %v allocations per run, want 0", n)
	}
	// Positions only: version 3's bare stream, the live message.
	if n := testing.AllocsPerRun(100, func() { buf, _ = enc.AppendBatch(buf[:0], "car-17", recs[:30]) }); n != 0 {
		t.Errorf("AppendBatch of positions: %v allocations per run, want 0", n)
	}
	rec := recs[0]
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendRecord(buf[:0], &rec) }); n != 0 {
		t.Errorf("AppendRecord: %v allocations per run, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf = AppendJSON(buf[:0], &rec) }); n != 0 {
		t.Errorf("AppendJSON: %v allocations per run, want 0", n)
	}
}

func TestTopic(t *testing.T) {
	if got := Topic("met", "bwc-0042", "telemetry"); got != "kestrel/v1/met/bwc-0042/telemetry" {
		t.Fatal(got)
	}
}

func TestFixJSONExample(t *testing.T) {
	// The example of DESIGN.md's command-line contract, byte for byte.
	const line = `{"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}`
	ts, p, err := ParseFixJSON([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(AppendFixJSON(nil, ts, &p)); got != line {
		t.Fatalf("got  %s\nwant %s", got, line)
	}
	null := `{"time":"2019-06-19T10:04:22.000Z","lat":-0.0000001,"lon":0.0,"alt":null,"speed":null,"track":null,"mode":2}`
	ts, p, err = ParseFixJSON([]byte(null))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(AppendFixJSON(nil, ts, &p)); got != null {
		t.Fatalf("got  %s\nwant %s", got, null)
	}
}

func TestParseFixJSONRounding(t *testing.T) {
	cases := []struct {
		json string
		want kestrel.Position
		t    int64
	}{
		// Half away from zero, on the decimal digits: 1.005 is 1.00499... as a float64.
		{`{"time":"2019-06-19T10:04:22.0005Z","lat":51.50000005,"lon":-0.12345675,"alt":1.005,"speed":1.005,"track":0.005,"mode":3}`,
			kestrel.Position{Lat: 515000001, Lon: -1234568, Alt: 101, Speed: 101, Track: 1, Mode: 3, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}, 1560938662001},
		{`{"time":"2019-06-19T10:04:22.0004999Z","lat":5.149999995e1,"lon":1E-8,"alt":-0.004,"speed":0,"track":360.00,"mode":3}`,
			kestrel.Position{Lat: 515000000, Lon: 0, Alt: 0, Speed: 0, Track: 36000, Mode: 3, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}, 1560938662000},
		{`{"time":"2019-06-19T11:04:22+01:00","lat":-90,"lon":180,"track":-10,"alt":null}`,
			kestrel.Position{Lat: -900000000, Lon: 1800000000, Track: 35000, Mode: 2, Flags: kestrel.HasTrack}, 1560938662000},
		{`{"time":"2019-06-19T10:04:22Z","lat":0,"lon":0,"track":725.5,"mode":3}`,
			kestrel.Position{Track: 550, Mode: 3, Flags: kestrel.HasTrack}, 1560938662000},
	}
	for _, c := range cases {
		ts, p, err := ParseFixJSON([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if p != c.want || ts != c.t {
			t.Errorf("%s:\ngot  %d %+v\nwant %d %+v", c.json, ts, p, c.t, c.want)
		}
	}
	for _, bad := range []string{``, `{}`, `{"time":"x","lat":1,"lon":1}`, `{"time":"2019-06-19T10:04:22Z","lon":1}`,
		`{"time":"2019-06-19T10:04:22Z","lat":91,"lon":1}`, `{"time":"2019-06-19T10:04:22Z","lat":"1","lon":1}`,
		`{"time":"2019-06-19T10:04:22Z","lat":1,"lon":1,"alt":1e300}`, `[1,2]`, `{"time":"2019-06-19T10:04:22Z","lat":1,"lon":1,"mode":-1}`} {
		if _, _, err := ParseFixJSON([]byte(bad)); !errors.Is(err, ErrFixJSON) {
			t.Errorf("%q: %v, want ErrFixJSON", bad, err)
		}
	}
}

func TestAppendJSONEveryKind(t *testing.T) {
	for _, r := range mixedBatch() {
		line := AppendJSON(nil, &r)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v\n%s", r.Kind(), err, line)
		}
		for _, k := range []string{"kind", "device", "boot", "seq", "time", "priority"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %s", r.Kind(), k, line)
			}
		}
		if m["kind"] != r.Kind().String() || m["priority"] != r.Priority.String() || m["seq"] != float64(r.Seq) {
			t.Errorf("envelope wrong in %s", line)
		}
	}
	r := mixedBatch()[1]
	if got := string(AppendJSON(nil, &r)); !strings.Contains(got, `"type":"emergency","source":"firmware","name":"button","value":1,"text":"officer \"needs\" help\n"`) {
		t.Errorf("event JSON: %s", got)
	}
	r = mixedBatch()[3]
	want := `{"kind":"position","device":"car-17","boot":4,"seq":1,"time":"2019-06-19T10:04:22.000Z","lat":-33.7,"lon":151.1,"alt":-12.5,"speed":25.0,"track":359.99,"mode":3,"sats":11,"hdop":0.87,"eph":3.5,"epv":7.2,"coarsened":100,"priority":"normal"}`
	if got := string(AppendJSON(nil, &r)); got != want {
		t.Errorf("position JSON:\ngot  %s\nwant %s", got, want)
	}
}

// TestGeneratedCodeCurrent runs the //go:generate line into a temporary
// file and compares: CI's drift check, but caught by go test too.
func TestGeneratedCodeCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgp generator")
	}
	out := filepath.Join(t.TempDir(), "bodies_gen.go")
	cmd := exec.Command("go", "tool", "msgp", "-file", "bodies.go", "-o", out, "-io=false", "-tests=false", "-unexported")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot run the msgp tool here: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("bodies_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatal("bodies_gen.go is stale: run go generate ./transport/wire/")
	}
}

// TestRadioJSONByProfile: an LTE modem's line carries no TETRA fields and a
// TETRA radio's no LTE ones, whose zeros would read as measurements.
func TestRadioJSONByProfile(t *testing.T) {
	seen := 0
	for _, r := range mixedBatch() {
		b, ok := r.Body.(*kestrel.RadioStatus)
		if !ok {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(AppendJSON(nil, &r), &m); err != nil {
			t.Fatal(err)
		}
		_, hasTG := m["talkgroup"]
		_, hasICCID := m["iccid"]
		_, hasRSRP := m["rsrp"]
		seen++
		switch b.Profile {
		case kestrel.ProfileLTE:
			if hasTG || !hasICCID || !hasRSRP {
				t.Errorf("LTE line %v", m)
			}
		case kestrel.ProfileTETRA:
			if !hasTG || hasICCID || hasRSRP {
				t.Errorf("TETRA line %v", m)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("%d radio records in the batch, want one of each profile", seen)
	}
}
