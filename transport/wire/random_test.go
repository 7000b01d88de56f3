package wire

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestRoundTripRandom drives the encoder through every path that the real
// tracks do not reach: extreme and random values, missing fields in any
// pattern, time going backwards, batch sizes 1 to 200, other kinds mixed
// in, 10 Hz and hour-long gaps.
func TestRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var enc Encoder
	extremes32 := []int32{math.MinInt32, math.MaxInt32, 0, -1, 1, 900000000, -900000000, 1800000000, -1800000000}
	for iter := 0; iter < 400; iter++ {
		n := 1 + rng.IntN(200)
		if iter%10 == 0 {
			n = 1 + rng.IntN(3)
		}
		style := iter % 4 // 0: smooth track, 1: random values, 2: extremes, 3: gaps and 10 Hz
		recs := make([]kestrel.Record, n)
		lat, lon := int32(rng.IntN(1800000000)-900000000), int32(rng.IntN(3600000000)-1800000000)
		vlat, vlon := int32(rng.IntN(2001)-1000), int32(rng.IntN(2001)-1000)
		tm := int64(1.6e12) + rng.Int64N(1e11)
		seq := rng.Uint64()
		for i := range recs {
			switch style {
			case 3:
				if rng.IntN(20) == 0 {
					tm += rng.Int64N(3600000)
				} else {
					tm += 100
				}
			case 2:
				tm = rng.Int64()
			default:
				tm += 1000 + rng.Int64N(3) - 1
			}
			seq += 1 + uint64(rng.IntN(2))
			env := kestrel.Envelope{Device: "d", Boot: uint32(3 + rng.IntN(2)), Seq: seq, Time: tm, Priority: kestrel.Priority(rng.IntN(4))}
			if rng.IntN(8) == 0 {
				recs[i] = kestrel.Record{Envelope: env, Body: &kestrel.Event{Type: kestrel.EventInput, Source: "gpio", Name: "ignition", Value: rng.Int64()}}
				continue
			}
			lat += vlat + int32(rng.IntN(21)-10)
			lon += vlon + int32(rng.IntN(21)-10)
			p := &kestrel.Position{Lat: lat, Lon: lon, Alt: int32(rng.IntN(100000)), Speed: int32(rng.IntN(5000)),
				Track: uint16(rng.IntN(36001)), Mode: kestrel.FixMode(2 + rng.IntN(2)), Sats: uint8(rng.IntN(30)),
				HDOP: uint16(rng.IntN(1000)), EPH: rng.Uint32(), EPV: rng.Uint32(), Flags: kestrel.PosFlags(rng.IntN(1 << 9))}
			switch style {
			case 1:
				p.Lat, p.Lon, p.Alt, p.Speed = rng.Int32(), rng.Int32(), rng.Int32(), rng.Int32()
				p.Track = uint16(rng.IntN(65536))
				p.Coarsened = rng.Uint32()
			case 2:
				p.Lat = extremes32[rng.IntN(len(extremes32))]
				p.Lon = extremes32[rng.IntN(len(extremes32))]
				p.Alt = extremes32[rng.IntN(len(extremes32))]
				p.Speed = extremes32[rng.IntN(len(extremes32))]
				p.Track = []uint16{0, 35999, 36000, 65535}[rng.IntN(4)]
				p.Mode = kestrel.FixMode(rng.IntN(256))
				env.Seq = []uint64{0, math.MaxUint64, 1 << 63}[rng.IntN(3)]
				env.Boot = []uint32{0, math.MaxUint32}[rng.IntN(2)]
			}
			recs[i] = kestrel.Record{Envelope: env, Body: p}
		}
		payload, err := enc.AppendBatch(nil, "d", recs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatchFor("d", payload)
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		want := normalised(recs)
		if !reflect.DeepEqual(got, want) {
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("iteration %d (style %d, %d records) record %d:\ngot  %+v %+v\nwant %+v %+v",
						iter, style, n, i, got[i].Envelope, got[i].Body, want[i].Envelope, want[i].Body)
				}
			}
		}
	}
}

// normalised is recs as decoding returns them: values whose Has* flag is
// clear are not carried.
func normalised(recs []kestrel.Record) []kestrel.Record {
	out := make([]kestrel.Record, len(recs))
	for i, r := range recs {
		out[i] = r
		if p, ok := r.Body.(*kestrel.Position); ok {
			q := *p
			f := q.Flags
			if f&kestrel.HasAlt == 0 {
				q.Alt = 0
			}
			if f&kestrel.HasSpeed == 0 {
				q.Speed = 0
			}
			if f&kestrel.HasTrack == 0 {
				q.Track = 0
			}
			if f&kestrel.HasSats == 0 {
				q.Sats = 0
			}
			if f&kestrel.HasHDOP == 0 {
				q.HDOP = 0
			}
			if f&kestrel.HasEPH == 0 {
				q.EPH = 0
			}
			if f&kestrel.HasEPV == 0 {
				q.EPV = 0
			}
			out[i].Body = &q
		}
	}
	return out
}
