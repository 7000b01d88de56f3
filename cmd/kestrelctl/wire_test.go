package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

const wireTestTrack = "../../transport/wire/testdata/tracks/visnjan-car.fixes.jsonl"

// wireTestRun runs kestrelctl in-process and returns exit code, stdout, stderr.
func wireTestRun(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, stdio{ctx: context.Background(), stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

type wireTestFix struct {
	Kind     string   `json:"kind"`
	Device   string   `json:"device"`
	Boot     uint32   `json:"boot"`
	Seq      uint64   `json:"seq"`
	Time     string   `json:"time"`
	Lat      float64  `json:"lat"`
	Lon      float64  `json:"lon"`
	Alt      *float64 `json:"alt"`
	Speed    *float64 `json:"speed"`
	Track    *float64 `json:"track"`
	Mode     int      `json:"mode"`
	Priority string   `json:"priority"`
}

func wireTestLines(t *testing.T, s string) []wireTestFix {
	t.Helper()
	var fixes []wireTestFix
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var f wireTestFix
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		fixes = append(fixes, f)
	}
	return fixes
}

func wireTestNear(a, b *float64, tol float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return math.Abs(*a-*b) <= tol+1e-9
}

// TestWireEncodeDecodeTrack is the outside check: a real track through
// wire encode and decode --hex comes back within DESIGN.md's tolerances,
// in at most 8 payload bytes per fix.
func TestWireEncodeDecodeTrack(t *testing.T) {
	in, err := os.ReadFile(wireTestTrack)
	if err != nil {
		t.Fatal(err)
	}
	want := wireTestLines(t, string(in))
	code, hexOut, stderr := wireTestRun(t, "", "wire", "encode", "--batch", "30", "--jsonl", wireTestTrack)
	if code != 0 {
		t.Fatalf("wire encode: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(hexOut), "\n")
	if len(lines) != (len(want)+29)/30 {
		t.Fatalf("%d payloads for %d fixes in batches of 30", len(lines), len(want))
	}
	payload := 0
	for _, l := range lines {
		topic, hx, ok := strings.Cut(l, " ")
		if !ok || topic != "kestrel/v1/demo/kestrelctl/telemetry" {
			t.Fatalf("line %q", l)
		}
		payload += len(hx) / 2
	}
	perFix := float64(payload) / float64(len(want))
	t.Logf("%d fixes, %d payload bytes, %.2f bytes per fix", len(want), payload, perFix)
	if perFix > 8 {
		t.Errorf("%.2f bytes per fix, more than 8", perFix)
	}

	wireTestCompare(t, hexOut, want)
}

// TestWireEncodeNMEA feeds the recorded NMEA itself: the GPS driver's
// fixes, batched and decoded, must equal the track's recorded fixes.
func TestWireEncodeNMEA(t *testing.T) {
	in, err := os.ReadFile(wireTestTrack)
	if err != nil {
		t.Fatal(err)
	}
	want := wireTestLines(t, string(in))
	nmeaFile := strings.TrimSuffix(wireTestTrack, ".fixes.jsonl") + ".nmea"
	code, hexOut, stderr := wireTestRun(t, "", "wire", "encode", "--batch", "25", nmeaFile)
	if code != 0 {
		t.Fatalf("wire encode: exit %d: %s", code, stderr)
	}
	if n := strings.Count(hexOut, "\n"); n != (len(want)+24)/25 {
		t.Fatalf("%d payloads for %d fixes in batches of 25", n, len(want))
	}
	wireTestCompare(t, hexOut, want)
}

// wireTestCompare decodes hexOut with kestrelctl decode --hex and checks
// every fix against want within DESIGN.md's tolerances.
func wireTestCompare(t *testing.T, hexOut string, want []wireTestFix) {
	t.Helper()
	code, jsonOut, stderr := wireTestRun(t, hexOut, "decode", "--hex")
	if code != 0 {
		t.Fatalf("decode: exit %d: %s", code, stderr)
	}
	got := wireTestLines(t, jsonOut)
	if len(got) != len(want) {
		t.Fatalf("%d fixes back, sent %d", len(got), len(want))
	}
	for i, g := range got {
		w := want[i]
		switch {
		case g.Kind != "position" || g.Device != "kestrelctl" || g.Boot != 1 || g.Seq != uint64(i+1) || g.Priority != "normal":
			t.Fatalf("fix %d: envelope %+v", i, g)
		case g.Time != w.Time || g.Mode != w.Mode:
			t.Fatalf("fix %d: time/mode %s %d, want %s %d", i, g.Time, g.Mode, w.Time, w.Mode)
		case math.Abs(g.Lat-w.Lat) > 1e-7+1e-12 || math.Abs(g.Lon-w.Lon) > 1e-7+1e-12:
			t.Fatalf("fix %d: %v,%v want %v,%v", i, g.Lat, g.Lon, w.Lat, w.Lon)
		case !wireTestNear(g.Alt, w.Alt, 0.1) || !wireTestNear(g.Speed, w.Speed, 0.01) || !wireTestNear(g.Track, w.Track, 0.01):
			t.Fatalf("fix %d: alt/speed/track %+v, want %+v", i, g, w)
		}
	}
}

func TestWireEncodeStdinFlagsAndMissingFields(t *testing.T) {
	in := `{"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}

{"time":"2019-06-19T10:04:23.000Z","lat":51.5000012,"lon":-0.1200034,"alt":null,"speed":null,"track":null,"mode":2}
{"time":"2019-06-19T10:04:33.000Z","lat":51.5000112,"lon":-0.1200134,"alt":36,"speed":1.25,"track":null,"mode":3}
`
	code, out, stderr := wireTestRun(t, in, "wire", "encode", "--jsonl", "--batch", "2", "--fleet", "met", "--device", "bwc-7", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "kestrel/v1/met/bwc-7/telemetry ") {
		t.Fatalf("output %q", out)
	}
	code, js, stderr := wireTestRun(t, out, "decode", "--hex", "-")
	if code != 0 {
		t.Fatalf("decode exit %d: %s", code, stderr)
	}
	want := `{"kind":"position","device":"bwc-7","boot":1,"seq":1,"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3,"priority":"normal"}
{"kind":"position","device":"bwc-7","boot":1,"seq":2,"time":"2019-06-19T10:04:23.000Z","lat":51.5000012,"lon":-0.1200034,"alt":null,"speed":null,"track":null,"mode":2,"priority":"normal"}
{"kind":"position","device":"bwc-7","boot":1,"seq":3,"time":"2019-06-19T10:04:33.000Z","lat":51.5000112,"lon":-0.1200134,"alt":36.0,"speed":1.25,"track":null,"mode":3,"priority":"normal"}
`
	if js != want {
		t.Fatalf("got\n%swant\n%s", js, want)
	}
}

func TestWireEncodeBadLinesReported(t *testing.T) {
	in := `{"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}
{"time":"2019-06-19T10:04:23.000Z","lat":151.5,"lon":-0.12}
not json
{"time":"2019-06-19T10:04:24.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}
`
	code, out, stderr := wireTestRun(t, in, "wire", "encode", "--jsonl")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "line 2:") || !strings.Contains(stderr, "line 3:") || strings.Contains(stderr, "line 4:") {
		t.Fatalf("stderr %q", stderr)
	}
	code, js, _ := wireTestRun(t, out, "decode", "--hex")
	if code != 0 || strings.Count(js, "\n") != 2 || !strings.Contains(js, `"seq":2,`) {
		t.Fatalf("the good lines were not all encoded: exit %d\n%s", code, js)
	}
}

func TestWireUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"wire"}, 2, "encode"},
		{[]string{"wire", "decode"}, 2, "unknown wire subcommand"},
		{[]string{"wire", "encode", "--batch", "0", "--jsonl"}, 2, "--batch"},
		{[]string{"wire", "encode", "--nope"}, 2, "nope"},
		{[]string{"wire", "encode", "--jsonl", "a", "b"}, 2, "one input file"},
		{[]string{"wire", "encode", "--jsonl", "/nonexistent/fixes"}, 1, "open input"},
		{[]string{"wire", "encode", "-h"}, 0, "HEXPAYLOAD"},
	}
	for _, c := range cases {
		code, _, stderr := wireTestRun(t, "", c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}
