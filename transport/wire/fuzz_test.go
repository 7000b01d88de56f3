package wire

import (
	"encoding/json"
	"reflect"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// The seed corpora are real encodings: batches of every recorded track at
// the batch sizes the agent uses (versions 3 and 2), the mixed batch of every kind, and
// single records, plus whatever go test -fuzz has saved in testdata/fuzz.

func batchSeeds(f *testing.F) {
	var enc Encoder
	for _, tr := range loadTracks(f) {
		for _, n := range []int{1, 10, 30, 60} {
			for _, at := range []int{0, len(tr.recs) / 2} {
				p, err := enc.AppendBatch(nil, "bwc-0042", tr.recs[at:min(at+n, len(tr.recs))])
				if err != nil {
					f.Fatal(err)
				}
				f.Add(p)
				if p, err = enc.AppendBatchV2(nil, "bwc-0042", tr.recs[at:min(at+n, len(tr.recs))]); err != nil {
					f.Fatal(err)
				}
				f.Add(p)
			}
		}
	}
	p, err := enc.AppendBatch(nil, "car-17", mixedBatch())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	if p, err = enc.AppendBatchV1(nil, "car-17", mixedBatch()); err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	for _, tr := range loadTracks(f) {
		if p, err = enc.AppendBatchV1(nil, "bwc-0042", tr.recs[:30]); err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{0x98, 0x02})
}

func FuzzDecodeBatch(f *testing.F) {
	batchSeeds(f)
	var enc Encoder
	f.Fuzz(func(t *testing.T, b []byte) {
		dev, recs, err := DecodeBatch(b)
		if err != nil {
			return
		}
		for i := range recs {
			if !json.Valid(AppendJSON(nil, &recs[i])) {
				t.Fatalf("record %d: invalid JSON", i)
			}
		}
		// Whatever decodes must survive encode and decode unchanged, in
		// the version it came in.
		again, err := enc.AppendBatch(nil, dev, recs)
		if dev != "" {
			again, err = enc.AppendBatchV1(nil, dev, recs)
		}
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		dev2, recs2, err := DecodeBatch(again)
		if err != nil || dev2 != dev || !reflect.DeepEqual(recs, recs2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, recs, recs2)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range mixedBatch() {
		b, err := AppendRecord(nil, &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, tr := range loadTracks(f) {
		b, _ := AppendRecord(nil, &tr.recs[len(tr.recs)/2])
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		if !json.Valid(AppendJSON(nil, &r)) {
			t.Fatal("invalid JSON")
		}
		again, err := AppendRecord(nil, &r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := DecodeRecord(again)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, r, r2)
		}
	})
}

func FuzzParseFixJSON(f *testing.F) {
	for _, tr := range loadTracks(f) {
		f.Add(tr.lines[0])
		f.Add(tr.lines[len(tr.lines)-1])
	}
	f.Add([]byte(`{"time":"2019-06-19T10:04:22.0005Z","lat":-5.149999995e1,"lon":1E-8,"alt":null,"speed":1.005,"track":360.00,"mode":3}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		ts, p, err := ParseFixJSON(line)
		if err != nil {
			return
		}
		// The printed fix must parse back to the same fixed-point values.
		out := AppendFixJSON(nil, ts, &p)
		ts2, p2, err := ParseFixJSON(out)
		if err != nil || ts2 != ts || p2 != p {
			t.Fatalf("%s -> %s -> %v %d %+v, want %d %+v", line, out, err, ts2, p2, ts, p)
		}
		var enc Encoder
		b, err := enc.AppendBatch(nil, "d", []kestrel.Record{{Envelope: kestrel.Envelope{Time: ts}, Body: &p}})
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := DecodeBatch(b)
		if err != nil || *recs[0].Body.(*kestrel.Position) != p || recs[0].Time != ts {
			t.Fatalf("batch round trip: %v", err)
		}
	})
}

// FuzzDecodePositions aims at the coded stream itself: arbitrary bytes as
// the stream of a well-formed version 2 envelope and as the bit stream of
// a version 1 one, so that every mutation reaches the column decoders
// instead of failing in the msgpack framing.
func FuzzDecodePositions(f *testing.F) {
	var enc Encoder
	for _, tr := range loadTracks(f) {
		for _, n := range []int{1, 2, 30} {
			if _, err := enc.AppendBatch(nil, "bwc-0042", tr.recs[:n]); err != nil {
				f.Fatal(err)
			}
			f.Add(false, uint8(n), append([]byte(nil), enc.rc.buf...))
			if _, err := enc.AppendBatchV1(nil, "bwc-0042", tr.recs[:n]); err != nil {
				f.Fatal(err)
			}
			f.Add(true, uint8(n), append([]byte(nil), enc.bw.buf...))
		}
	}
	f.Fuzz(func(t *testing.T, v1 bool, n uint8, bin []byte) {
		var b []byte
		if v1 {
			b = msgp.AppendArrayHeader(nil, batchFields)
			b = msgp.AppendUint(b, version1)
			b = msgp.AppendString(b, "d")
			b = msgp.AppendUint32(b, uint32(n))
			b = msgp.AppendUint32(b, 7)
			b = msgp.AppendUint64(b, 1000)
			b = msgp.AppendInt64(b, 1.6e12)
			b = msgp.AppendBytes(b, bin)
			b = msgp.AppendArrayHeader(b, 0)
		} else {
			b = msgp.AppendArrayHeader(nil, 2)
			b = msgp.AppendUint(b, Version)
			b = msgp.AppendBytes(b, bin)
		}
		recs, err := DecodeBatchFor("d", b)
		if err != nil {
			return
		}
		var e Encoder
		again, err := e.AppendBatch(nil, "d", recs)
		if err != nil {
			t.Fatal(err)
		}
		recs2, err := DecodeBatchFor("d", again)
		if err != nil || !reflect.DeepEqual(recs, recs2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
