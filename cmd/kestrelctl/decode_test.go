package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// decodeTestBatch is a small batch of mixed kinds, encoded.
func decodeTestBatch(t *testing.T, seq0 uint64) []byte {
	t.Helper()
	recs := []kestrel.Record{
		{Envelope: kestrel.Envelope{Boot: 2, Seq: seq0, Time: 1560938662000, Priority: kestrel.PriorityNormal},
			Body: &kestrel.Position{Lat: 515000000, Lon: -1200000, Alt: 3520, Speed: 130, Track: 27150, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack}},
		{Envelope: kestrel.Envelope{Boot: 2, Seq: seq0 + 1, Time: 1560938662500, Priority: kestrel.PriorityEmergency},
			Body: &kestrel.Event{Type: kestrel.EventEmergency, Source: "firmware", Name: "button", Value: 1}},
	}
	var enc wire.Encoder
	b, err := enc.AppendBatch(nil, "bwc-9", recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRawConcatenated(t *testing.T) {
	raw := append(decodeTestBatch(t, 10), decodeTestBatch(t, 20)...)
	file := filepath.Join(t.TempDir(), "payloads.bin")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := wireTestRun(t, "", "decode", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Raw version 2 payloads have no topic, so no device.
	want := `{"kind":"position","device":"","boot":2,"seq":10,"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3,"priority":"normal"}
{"kind":"event","device":"","boot":2,"seq":11,"time":"2019-06-19T10:04:22.500Z","type":"emergency","source":"firmware","name":"button","value":1,"text":"","priority":"emergency"}
`
	if out != want+strings.ReplaceAll(strings.ReplaceAll(want, `"seq":10`, `"seq":20`), `"seq":11`, `"seq":21`) {
		t.Fatalf("got\n%s", out)
	}
	// A truncated stream decodes what it can, then fails with the offset.
	code, out, stderr = wireTestRun(t, string(raw[:len(raw)-3]), "decode")
	if code != 1 || strings.Count(out, "\n") != 2 || !strings.Contains(stderr, "payload 2 at byte") {
		t.Fatalf("truncated: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestDecodeHexBadLinesContinue(t *testing.T) {
	good := hex.EncodeToString(decodeTestBatch(t, 1))
	future := decodeTestBatch(t, 5)
	future[1] = 9 // the version
	in := strings.Join([]string{
		"kestrel/v1/demo/bwc-9/telemetry " + good,
		"kestrel/v1/demo/bwc-9/telemetry zz",
		"kestrel/v1/demo/bwc-9/state 81a66f6e6c696e65c3",
		"",
		"# a comment",
		"kestrel/v1/demo/bwc-9/events " + hex.EncodeToString(future),
		"kestrel/v1/demo/bwc-9/telemetry " + good[:len(good)-4],
		good,
	}, "\n")
	code, out, stderr := wireTestRun(t, in, "decode", "--hex")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"line 2 (kestrel/v1/demo/bwc-9/telemetry): bad hex", "line 6 (kestrel/v1/demo/bwc-9/events): ", "version 9", "line 7 ", "skipped 1 messages", "3 of the input lines"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "line 3") || strings.Contains(stderr, "line 8") {
		t.Errorf("good or skipped lines reported:\n%s", stderr)
	}
	if n := strings.Count(out, `"kind":"position"`); n != 2 {
		t.Errorf("%d positions decoded from the two good lines, want 2:\n%s", n, out)
	}
}

func TestDecodeUsage(t *testing.T) {
	if code, _, stderr := wireTestRun(t, "", "decode", "--bogus"); code != 2 || !strings.Contains(stderr, "bogus") {
		t.Errorf("bad flag: exit %d %q", code, stderr)
	}
	if code, _, stderr := wireTestRun(t, "", "decode", "-h"); code != 0 || !strings.Contains(stderr, "mosquitto_sub") {
		t.Errorf("-h: exit %d %q", code, stderr)
	}
	if code, out, _ := wireTestRun(t, "", "decode", "--hex"); code != 0 || out != "" {
		t.Errorf("empty input: exit %d %q", code, out)
	}
}
