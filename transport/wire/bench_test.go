package wire

import (
	"encoding/json"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Encode and decode speed, beside the peers measured in the same run:
//
//	go test ./transport/wire/ -run '^$' -bench . -benchmem
//
// Each op is one batch of 30 fixes from the santa-rosa run (1 Hz).

func benchBatch(b *testing.B) []kestrel.Record {
	for _, tr := range loadTracks(b) {
		if tr.name == "santa-rosa-marathon-run" {
			return tr.recs[1000:1030]
		}
	}
	b.Fatal("track missing")
	return nil
}

func BenchmarkAppendBatch30(b *testing.B) {
	recs := benchBatch(b)
	var enc Encoder
	buf, _ := enc.AppendBatch(nil, "bwc-0042", recs)
	b.ReportMetric(float64(len(buf))/30, "bytes/fix")
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = enc.AppendBatch(buf[:0], "bwc-0042", recs)
	}
}

func BenchmarkAppendBatchV1_30(b *testing.B) {
	recs := benchBatch(b)
	var enc Encoder
	buf, _ := enc.AppendBatchV1(nil, "bwc-0042", recs)
	b.ReportMetric(float64(len(buf))/30, "bytes/fix")
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = enc.AppendBatchV1(buf[:0], "bwc-0042", recs)
	}
}

func BenchmarkDecodeBatchV1_30(b *testing.B) {
	var enc Encoder
	payload, _ := enc.AppendBatchV1(nil, "bwc-0042", benchBatch(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeBatch(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBatch30(b *testing.B) {
	var enc Encoder
	payload, _ := enc.AppendBatch(nil, "bwc-0042", benchBatch(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeBatch(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendRecord30(b *testing.B) {
	recs := benchBatch(b)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for i := range recs {
			buf, _ = AppendRecord(buf, &recs[i])
		}
	}
}

func BenchmarkDecodeRecord30(b *testing.B) {
	recs := benchBatch(b)
	var encoded [][]byte
	for i := range recs {
		r, _ := AppendRecord(nil, &recs[i])
		encoded = append(encoded, r)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range encoded {
			if _, err := DecodeRecord(r); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkAppendJSON30(b *testing.B) {
	recs := benchBatch(b)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for i := range recs {
			buf = AppendJSON(buf, &recs[i])
			buf = append(buf, '\n')
		}
	}
}

// Peers.

type peerFix struct {
	Time  string   `json:"time"`
	Lat   float64  `json:"lat"`
	Lon   float64  `json:"lon"`
	Alt   *float64 `json:"alt"`
	Speed *float64 `json:"speed"`
	Track *float64 `json:"track"`
	Mode  int      `json:"mode"`
}

func BenchmarkPeerEncodingJSONMarshal30(b *testing.B) {
	recs := benchBatch(b)
	fixes := make([]peerFix, len(recs))
	for i := range recs {
		p := recs[i].Body.(*kestrel.Position)
		alt, speed, track := float64(p.Alt)/100, float64(p.Speed)/100, float64(p.Track)/100
		fixes[i] = peerFix{Time: "2016-08-28T13:03:35.000Z", Lat: float64(p.Lat) / 1e7, Lon: float64(p.Lon) / 1e7, Alt: &alt, Speed: &speed, Track: &track, Mode: 3}
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := range fixes {
			if _, err := json.Marshal(&fixes[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkPeerEncodingJSONUnmarshal30(b *testing.B) {
	recs := benchBatch(b)
	var lines [][]byte
	for i := range recs {
		lines = append(lines, AppendFixJSON(nil, recs[i].Time, recs[i].Body.(*kestrel.Position)))
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, l := range lines {
			var f peerFix
			if err := json.Unmarshal(l, &f); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkPeerCodec8Encode30(b *testing.B) {
	recs := benchBatch(b)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendCodec8(buf[:0], recs)
	}
}

func BenchmarkPeerLIPEncode30(b *testing.B) {
	recs := benchBatch(b)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for i := range recs {
			buf = appendLIP(buf, recs[i].Body.(*kestrel.Position))
		}
	}
}
