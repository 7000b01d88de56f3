package wire

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

func expLoadLog(t testing.TB, f string) []kestrel.Record {
	fh, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var recs []kestrel.Record
	nmea.Decode(fh, nmea.Options{}, func(fx nmea.Fix) error {
		p := fx.Pos
		recs = append(recs, kestrel.Record{Envelope: kestrel.Envelope{Device: "d", Boot: 365, Seq: uint64(31536000 + len(recs)), Time: fx.Time, Priority: kestrel.PriorityNormal}, Body: &p})
		return nil
	})
	return recs
}


func TestExpMeasured(t *testing.T) {
	dir := os.Getenv("EXP_DIR")
	if dir == "" {
		t.Skip()
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	files2, _ := filepath.Glob(filepath.Join(dir, "*.nmea"))
	files = append(files, files2...)
	sort.Strings(files)
	ExpShape = os.Getenv("X_SHAPE") != ""
	ExpFirstDiv = os.Getenv("X_FDIV") != ""
	ExpSec = os.Getenv("X_SEC") != ""
	ExpRefs = os.Getenv("X_REFS") != ""
	var totB, totF, totMsg int
	var totCols [numCols]int
	for fi, f := range files {
		if h := os.Getenv("HALF"); h != "" && (fi%2 == 0) != (h == "tune") {
			continue
		}
		recs := expLoadLog(t, f)
		if len(recs) < 20 {
			continue
		}
		// 1 Hz? median dt
		var dts []int64
		nsp, ntr := 0, 0
		for i := range recs {
			p := recs[i].Body.(*kestrel.Position)
			if p.Flags&kestrel.HasSpeed != 0 {
				nsp++
			}
			if p.Flags&kestrel.HasTrack != 0 {
				ntr++
			}
			if i > 0 {
				dts = append(dts, recs[i].Time-recs[i-1].Time)
			}
		}
		sort.Slice(dts, func(a, b int) bool { return dts[a] < dts[b] })
		if dts[len(dts)/2] != 1000 && os.Getenv("EXP_ALL") == "" {
			continue
		}
		var e Encoder
		e.noUnit = os.Getenv("EXP_NOUNIT") != ""
		e.noDivisorBit = os.Getenv("EXP_NODIV") != ""
		var cols [numCols]int
		e.colBits = &cols
		bytes, msgs := 0, 0
		for i := 0; i+10 <= len(recs); i += 10 {
			batch := recs[i:min(i+10, len(recs))]
			if os.Getenv("EXP_NOQ") != "" {
				cp := make([]kestrel.Record, len(batch))
				for j := range batch {
					q := *batch[j].Body.(*kestrel.Position)
					q.Flags &^= kestrel.HasSats | kestrel.HasHDOP | kestrel.HasEPH | kestrel.HasEPV
					cp[j] = batch[j]
					cp[j].Body = &q
				}
				batch = cp
			}
			var b []byte
			var err error
			if os.Getenv("EXP_V3") != "" {
				b, err = e.AppendBatchV3(nil, "d", batch)
			} else {
				b, err = e.AppendBatch(nil, "d", batch)
			}
			if err != nil {
				t.Fatal(err)
			}
			bytes += len(b)
			msgs++
		}
		n := len(recs) / 10 * 10
		stream := bytes + msgs*(2+35+2+4)
		var sb strings.Builder
		for c := range cols {
			if cols[c] > 0 {
				fmt.Fprintf(&sb, " %s=%.1f", colNames[c], float64(cols[c])/float64(n))
				totCols[c] += cols[c]
			}
		}
		fmt.Printf("%-32s n=%4d sp=%d tr=%d dt=%d payload=%.2f stream=%.2f |%s\n", filepath.Base(f), n, nsp, ntr, dts[len(dts)/2], float64(bytes)/float64(n), float64(stream)/float64(n), sb.String())
		totB += bytes
		totF += n
		totMsg += msgs
	}
	var sb strings.Builder
	for c := range totCols {
		if totCols[c] > 0 {
			fmt.Fprintf(&sb, " %s=%.1f", colNames[c], float64(totCols[c])/float64(totF))
		}
	}
	fmt.Printf("ALL n=%d payload=%.2f stream=%.2f |%s\n", totF, float64(totB)/float64(totF), float64(totB+totMsg*43)/float64(totF), sb.String())
}
