package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// platformTestDB stores three fixes of bwc-9 (seq 1, 2 and 5: a gap of 3-4)
// as serve would, and returns the --db URL.
func platformTestDB(t *testing.T) string {
	t.Helper()
	url := "sqlite:" + filepath.Join(t.TempDir(), "k.db")
	st, err := platform.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var recs []kestrel.Record
	for i, seq := range []uint64{1, 2, 5} {
		recs = append(recs, kestrel.Record{
			Envelope: kestrel.Envelope{Device: "bwc-9", Boot: 2, Seq: seq, Time: 1560938662000 + int64(i)*1000, Priority: kestrel.PriorityNormal},
			Body: &kestrel.Position{Lat: 515000000 + int32(i), Lon: -1200000, Alt: 3520, Speed: 130, Track: 27150, Mode: kestrel.Fix3D,
				Flags: kestrel.HasAlt | kestrel.HasSpeed | kestrel.HasTrack},
		})
	}
	var enc wire.Encoder
	p, err := enc.AppendBatch(nil, "bwc-9", recs)
	if err != nil {
		t.Fatal(err)
	}
	var b platform.Batch
	if err := b.Add(platform.Message{Topic: wire.Topic("met", "bwc-9", "telemetry"), Payload: p, Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	return url
}

func TestTrackFormats(t *testing.T) {
	db := platformTestDB(t)
	code, out, stderr := wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9")
	if code != 0 {
		t.Fatalf("jsonl: exit %d: %s", code, stderr)
	}
	first := `{"kind":"position","device":"bwc-9","boot":2,"seq":1,"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3,"priority":"normal"}`
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || lines[0] != first {
		t.Fatalf("jsonl:\n%s", out)
	}
	code, out, stderr = wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9", "--format", "geojson", "--from", "2019-06-19T10:04:23Z")
	var fc struct {
		Type     string
		Features []struct {
			Geometry struct {
				Type        string
				Coordinates []float64
			}
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &fc) != nil || len(fc.Features) != 2 || fc.Features[0].Geometry.Coordinates[1] != 51.5000001 {
		t.Fatalf("geojson: exit %d %s\n%s", code, stderr, out)
	}
	code, out, _ = wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9", "--format", "gpx")
	var gpx struct {
		Trk struct {
			Trkseg struct {
				Trkpt []struct {
					Lat  float64 `xml:"lat,attr"`
					Ele  float64 `xml:"ele"`
					Time string  `xml:"time"`
				} `xml:"trkpt"`
			} `xml:"trkseg"`
		} `xml:"trk"`
	}
	if code != 0 || xml.Unmarshal([]byte(out), &gpx) != nil || len(gpx.Trk.Trkseg.Trkpt) != 3 || gpx.Trk.Trkseg.Trkpt[0].Ele != 35.2 {
		t.Fatalf("gpx: exit %d\n%s", code, out)
	}
	code, out, _ = wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9", "--format", "csv", "--to", "2019-06-19T10:04:23Z")
	if code != 0 || out != "time,lat,lon,alt,speed,track,mode,sats,hdop,fleet,device,boot,seq,priority\n2019-06-19T10:04:22.000Z,51.5,-0.12,35.2,1.3,271.5,3,,,met,bwc-9,2,1,normal\n" {
		t.Fatalf("csv: exit %d\n%s", code, out)
	}
	if code, _, _ := wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9", "--format", "kml"); code != 2 {
		t.Errorf("unknown format: exit %d, want 2", code)
	}
	if code, _, _ := wireTestRun(t, "", "track", "--db", db); code != 2 {
		t.Errorf("no --device: exit %d, want 2", code)
	}
}

func TestGapsAndDevices(t *testing.T) {
	db := platformTestDB(t)
	code, out, stderr := wireTestRun(t, "", "gaps", "--db", db, "--fleet", "met")
	var g platform.Gap
	if code != 0 || json.Unmarshal([]byte(out), &g) != nil || g.FirstSeq != 3 || g.LastSeq != 4 || g.Missing != 2 || !g.Remaining {
		t.Fatalf("gaps: exit %d %s\n%s", code, stderr, out)
	}
	if code, out, _ := wireTestRun(t, "", "gaps", "--db", db, "--fleet", "other"); code != 0 || out != "" {
		t.Fatalf("gaps of another fleet: exit %d %q", code, out)
	}
	code, out, _ = wireTestRun(t, "", "devices", "--db", db)
	if code != 0 || !strings.Contains(out, "bwc-9") || !strings.Contains(out, "2019-06-19T10:04:24Z") {
		t.Fatalf("devices table: exit %d\n%s", code, out)
	}
	code, out, _ = wireTestRun(t, "", "devices", "--db", db, "--json")
	var d platform.Device
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || d.Device != "bwc-9" || d.OpenGaps != 1 || d.Missing != 2 {
		t.Fatalf("devices --json: exit %d\n%s", code, out)
	}
	if code, _, stderr := wireTestRun(t, "", "devices", "--db", "sqlite:"+filepath.Join(t.TempDir(), "missing.db")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing database: exit %d %s", code, stderr)
	}
	if code, _, _ := wireTestRun(t, "", "devices"); code != 2 {
		t.Errorf("no --db: exit %d, want 2", code)
	}
}
