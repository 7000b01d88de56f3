package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// The size benchmark: bytes per fix over every recorded track, Kestrel
// batches beside the peers, and the ablations that chose the encoding
// (docs/wire.md, docs/benchmarks.md "Wire size"). It is a test, not a
// testing.B benchmark, because it measures bytes, which do not vary from
// run to run. Print the tables with
//
//	go test ./transport/wire/ -run TestWireSize -v
//
// The assertions are DESIGN's bar: at most 8 bytes per fix in batches of
// 30 on every track, and fewer than TETRA LIP's 10.5.

// variant is one way of encoding a batch; it returns the payload size.
type variant struct {
	name string
	size func(e *Encoder, recs []kestrel.Record) int
}

// kestrelVariant is version 1's encoder with some techniques off (the
// ablations that chose v1); kestrel2Variant is version 2's.
func kestrelVariant(name string, setup func(e *Encoder)) variant {
	return variant{name, func(e *Encoder, recs []kestrel.Record) int {
		*e = Encoder{}
		setup(e)
		p, err := e.AppendBatchV1(nil, "kestrelctl", recs)
		if err != nil {
			panic(err)
		}
		return len(p)
	}}
}

func kestrel2Variant(name string, setup func(e *Encoder)) variant {
	return variant{name, func(e *Encoder, recs []kestrel.Record) int {
		*e = Encoder{}
		setup(e)
		p, err := e.AppendBatch(nil, "kestrelctl", recs)
		if err != nil {
			panic(err)
		}
		return len(p)
	}}
}

// columnsByteAligned (v1's envelope) is the columnar layout with byte-aligned integers
// instead of the bit stream: each column as delta (or delta of delta),
// zigzag varints or msgp ints, in the same envelope as Kestrel.
func columnsByteAligned(dod, msgpInts bool) func(e *Encoder, recs []kestrel.Record) int {
	return func(e *Encoder, recs []kestrel.Record) int {
		*e = Encoder{}
		p, err := e.AppendBatchV1(nil, "kestrelctl", recs)
		if err != nil {
			panic(err)
		}
		envelope := len(p) - len(e.bw.buf)
		if len(e.bw.buf) > 255 {
			envelope++ // bin16 header instead of bin8, about
		}
		var b []byte
		for c := 0; c < numCols; c++ {
			if len(e.cols[c]) > 0 && allEqual(e.cols[c]) { // a constant column is sent once
				b = binary.AppendUvarint(b, 0)
				b = binary.AppendUvarint(b, zigzag(int64(e.cols[c][0])))
				continue
			}
			b = binary.AppendUvarint(b, 1)
			var prev, prevDelta int64
			for i, v := range e.cols[c] {
				x := int64(v)
				d := x - prev
				r := d
				if dod && i > 0 {
					r = d - prevDelta
				}
				prev, prevDelta = x, d
				if msgpInts {
					b = msgp.AppendInt64(b, r)
				} else {
					b = binary.AppendUvarint(b, zigzag(r))
				}
			}
		}
		return envelope + len(b)
	}
}

func allEqual(v []uint64) bool {
	for _, x := range v {
		if x != v[0] {
			return false
		}
	}
	return true
}

func sizeVariants() []variant {
	return []variant{
		{"msgp record tuples (AppendRecord, one per fix)", func(_ *Encoder, recs []kestrel.Record) int {
			n := 0
			for i := range recs {
				b, _ := AppendRecord(nil, &recs[i])
				n += len(b)
			}
			return n
		}},
		{"columns, delta, msgp ints", columnsByteAligned(false, true)},
		{"columns, delta, zigzag varints", columnsByteAligned(false, false)},
		{"columns, delta of delta, zigzag varints", columnsByteAligned(true, false)},
		kestrelVariant("bits, delta only, Exp-Golomb", func(e *Encoder) {
			e.shapes = 1 << shapeDelta
			e.noPredict, e.scratch.noRice, e.scratch.noGCD = true, true, true
		}),
		kestrelVariant("bits, delta of delta only, Exp-Golomb", func(e *Encoder) {
			e.shapes = 1 << shapeDoD
			e.noPredict, e.scratch.noRice, e.scratch.noGCD = true, true, true
		}),
		kestrelVariant("bits, best shape per column", func(e *Encoder) {
			e.shapes = allShapes &^ (1 << shapeTDoD)
			e.noPredict, e.scratch.noRice, e.scratch.noGCD = true, true, true
		}),
		kestrelVariant("  + common divisor", func(e *Encoder) {
			e.shapes = allShapes &^ (1 << shapeTDoD)
			e.noPredict, e.scratch.noRice = true, true
		}),
		kestrelVariant("  + Rice codes", func(e *Encoder) {
			e.shapes = allShapes &^ (1 << shapeTDoD)
			e.noPredict = true
		}),
		kestrelVariant("  + time-scaled delta of delta", func(e *Encoder) {
			e.noPredict = true
		}),
		kestrelVariant("  + speed/track prediction (Kestrel v1)", func(e *Encoder) {}),
		kestrel2Variant("v3 without the grid and without speed/track prediction", func(e *Encoder) { e.noGrid, e.noPredict = true, true }),
		kestrel2Variant("v3 without the receiver's grid", func(e *Encoder) { e.noGrid = true }),
		kestrel2Variant("v3 without adaptive Rice (adaptive Exp-Golomb only)", func(e *Encoder) { e.scratch.noRice = true }),
		kestrel2Variant("v3 without the bare stream (array framing, as v2)", func(e *Encoder) { e.noBare = true }),
		kestrel2Variant("v3 without the whole-second time step (as v2)", func(e *Encoder) { e.noSec = true }),
		kestrel2Variant("v3 without both (= Kestrel v2)", func(e *Encoder) { e.noBare, e.noSec = true, true }),
		kestrel2Variant("**Kestrel v3**", func(e *Encoder) {}),
	}
}

type sizeRow struct {
	name  string
	bytes []int // per track
	fixes []int
}

func (r sizeRow) cells() string {
	var s strings.Builder
	tb, tf := 0, 0
	for i := range r.bytes {
		fmt.Fprintf(&s, " %.2f |", float64(r.bytes[i])/float64(r.fixes[i]))
		tb += r.bytes[i]
		tf += r.fixes[i]
	}
	fmt.Fprintf(&s, " %.2f |", float64(tb)/float64(tf))
	return s.String()
}

func batched(recs []kestrel.Record, n int, f func([]kestrel.Record) int) int {
	total := 0
	for i := 0; i < len(recs); i += n {
		total += f(recs[i:min(i+n, len(recs))])
	}
	return total
}

func TestWireSize(t *testing.T) {
	tracks := loadTracks(t)
	for _, tr := range tracks {
		for i := range tr.recs {
			tr.recs[i].Device = ""
		}
	}
	header := "| encoding |"
	sep := "|---|"
	for _, tr := range tracks {
		header += fmt.Sprintf(" %s (%d) |", tr.name, len(tr.recs))
		sep += "---:|"
	}
	header += " all |"
	sep += "---:|"

	var enc Encoder
	var rows []sizeRow
	add := func(name string, f func(tr track) int) sizeRow {
		r := sizeRow{name: name}
		for _, tr := range tracks {
			r.bytes = append(r.bytes, f(tr))
			r.fixes = append(r.fixes, len(tr.recs))
		}
		rows = append(rows, r)
		return r
	}
	kestrelSize := func(n int) func(tr track) int {
		return func(tr track) int {
			return batched(tr.recs, n, func(b []kestrel.Record) int {
				p, err := enc.AppendBatch(nil, "kestrelctl", b)
				if err != nil {
					t.Fatal(err)
				}
				return len(p)
			})
		}
	}
	var k30 sizeRow
	add("Kestrel v1, batch 30", func(tr track) int {
		return batched(tr.recs, 30, func(b []kestrel.Record) int {
			p, err := enc.AppendBatchV1(nil, "kestrelctl", b)
			if err != nil {
				t.Fatal(err)
			}
			return len(p)
		})
	})
	for _, n := range []int{1, 5, 10, 30, 60} {
		r := add(fmt.Sprintf("Kestrel v3, batch %d", n), kestrelSize(n))
		if n == 30 {
			k30 = r
		}
	}
	for _, n := range []int{10, 30} {
		add(fmt.Sprintf("Kestrel v2, batch %d", n), func(tr track) int {
			return batched(tr.recs, n, func(b []kestrel.Record) int {
				p, err := enc.AppendBatchV2(nil, "kestrelctl", b)
				if err != nil {
					t.Fatal(err)
				}
				return len(p)
			})
		})
	}
	add("compact JSON (nmea decode line + newline)", func(tr track) int {
		n := 0
		for i := range tr.recs {
			n += len(AppendFixJSON(nil, tr.recs[i].Time, tr.recs[i].Body.(*kestrel.Position))) + 1
		}
		return n
	})
	add("compact JSON as recorded in the .fixes.jsonl", func(tr track) int {
		n := 0
		for _, l := range tr.lines {
			n += len(l) + 1
		}
		return n
	})
	for _, n := range []int{10, 30, 60} {
		add(fmt.Sprintf("Teltonika Codec 8, %d records per packet", n), func(tr track) int {
			return batched(tr.recs, n, func(b []kestrel.Record) int {
				p := appendCodec8(nil, b)
				if len(p) != 30*len(b)+15 {
					t.Fatalf("Codec 8 packet of %d records is %d bytes, want %d", len(b), len(p), 30*len(b)+15)
				}
				return len(p)
			})
		})
	}
	lip := add("TETRA LIP short location report (84 bits)", func(tr track) int {
		for i := range tr.recs[:1] {
			if n := len(appendLIP(nil, tr.recs[i].Body.(*kestrel.Position))); n != 11 {
				t.Fatalf("LIP report is %d bytes, want 11 (84 bits)", n)
			}
		}
		return len(tr.recs) * lipBits / 8 // 10.5 bytes: the SDS carries bits
	})
	var out strings.Builder
	fmt.Fprintf(&out, "Bytes per fix:\n\n%s\n%s\n", header, sep)
	for _, r := range rows {
		fmt.Fprintf(&out, "| %s |%s\n", r.name, r.cells())
	}

	// Ablations, batch 30 (and 10 for version 3's per-message savings).
	for _, n := range []int{30, 10} {
		fmt.Fprintf(&out, "\nAblations, batches of %d, bytes per fix:\n\n%s\n%s\n", n, header, sep)
		for _, v := range sizeVariants() {
			if n == 10 && !strings.HasPrefix(strings.Trim(v.name, "*"), "v3") && !strings.HasPrefix(strings.Trim(v.name, "*"), "Kestrel v3") {
				continue
			}
			r := sizeRow{name: v.name}
			var e Encoder
			for _, tr := range tracks {
				r.bytes = append(r.bytes, batched(tr.recs, n, func(b []kestrel.Record) int { return v.size(&e, b) }))
				r.fixes = append(r.fixes, len(tr.recs))
			}
			fmt.Fprintf(&out, "| %s |%s\n", r.name, r.cells())
		}
	}

	fmt.Fprintf(&out, "\nWhat the peers keep (worst case over all tracks):\n\n%s", resolutionTable(tracks))
	t.Log("\n" + out.String())
	if path := os.Getenv("KESTREL_WIRE_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	tb, tf := 0, 0
	for i := range k30.bytes {
		per := float64(k30.bytes[i]) / float64(k30.fixes[i])
		if per > 8 {
			t.Errorf("%s: %.2f bytes per fix in batches of 30, more than 8", tracks[i].name, per)
		}
		tb += k30.bytes[i]
		tf += k30.fixes[i]
	}
	lb := 0
	for _, b := range lip.bytes {
		lb += b
	}
	if per := float64(tb) / float64(tf); per > 3.0 {
		t.Errorf("Kestrel v3 batches of 30: %.3f bytes per fix over all tracks, more than 3.0", per)
	}
	if tb >= lb {
		t.Errorf("Kestrel batches of 30 (%d bytes) are not smaller than LIP (%d)", tb, lb)
	}
}

// resolutionTable measures what Codec 8 and LIP lose: they are not
// lossless in DESIGN.md's sense.
func resolutionTable(tracks []track) string {
	type worst struct{ pos, alt, speed, track float64 }
	var c8, lip worst
	for _, tr := range tracks {
		for i := range tr.recs {
			p := tr.recs[i].Body.(*kestrel.Position)
			lat, lon := float64(p.Lat)/1e7, float64(p.Lon)/1e7
			// Codec 8 keeps 1e-7 degrees, whole metres, degrees and km/h.
			c8.alt = math.Max(c8.alt, math.Abs(float64(p.Alt)/100-float64(roundDiv(int64(p.Alt), 100))))
			c8.speed = math.Max(c8.speed, math.Abs(float64(p.Speed)/100-float64(roundDiv(int64(p.Speed)*36, 1000))/3.6))
			c8.track = math.Max(c8.track, angleDiff(float64(p.Track)/100, float64(roundDiv(int64(p.Track), 100)%360)))
			// LIP keeps 24/25-bit angles, no altitude, coarse speed and 16 directions.
			la := lipAngleBack(lipAngle(int64(p.Lat), 24, 90), 24, 90)
			lo := lipAngleBack(lipAngle(int64(p.Lon), 25, 180), 25, 180)
			lip.pos = math.Max(lip.pos, metres(lat, lon, la, lo))
			if p.Flags&kestrel.HasAlt != 0 {
				lip.alt = math.Max(lip.alt, math.Abs(float64(p.Alt)/100))
			}
			lip.speed = math.Max(lip.speed, math.Abs(float64(p.Speed)/100-lipVelocityBack(lipVelocity(p))))
			lip.track = math.Max(lip.track, angleDiff(float64(p.Track)/100, float64(lipDirection(p))*22.5))
		}
	}
	return fmt.Sprintf("| format | position | altitude | speed | track |\n|---|---:|---:|---:|---:|\n"+
		"| Kestrel v1 | exact (1e-7 deg) | exact (cm) | exact (cm/s) | exact (0.01 deg) |\n"+
		"| Teltonika Codec 8 | exact (1e-7 deg) | %.2f m | %.2f m/s | %.2f deg |\n"+
		"| TETRA LIP short report | %.2f m | not sent (up to %.0f m) | %.2f m/s | %.2f deg |\n",
		c8.alt, c8.speed, c8.track, lip.pos, lip.alt, lip.speed, lip.track)
}

func angleDiff(a, b float64) float64 {
	d := math.Mod(math.Abs(a-b), 360)
	return math.Min(d, 360-d)
}

func metres(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371008.8
	dy := (lat2 - lat1) * math.Pi / 180 * r
	dx := (lon2 - lon1) * math.Pi / 180 * r * math.Cos(lat1*math.Pi/180)
	return math.Hypot(dx, dy)
}
