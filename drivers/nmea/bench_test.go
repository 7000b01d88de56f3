package nmea

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func corpus(b *testing.B) []byte {
	b.Helper()
	logs, err := filepath.Glob("testdata/gpsd/*.log")
	if err != nil || len(logs) == 0 {
		b.Fatalf("no corpus: %v", err)
	}
	var all []byte
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, data...)
	}
	return all
}

// BenchmarkDecode feeds the whole gpsd corpus through one decoder in 4 KiB
// writes (as a serial read loop would) and drains fixes. Reported per
// sentence: ns/sentence and allocations, which must be zero in steady
// state (the decoder is reused across iterations, so its fix queue has
// already grown).
func BenchmarkDecode(b *testing.B) {
	data := corpus(b)
	d := NewDecoder(Options{})
	sentences := bytes.Count(data, []byte("\n"))
	var out []byte
	run := func() {
		for p := data; len(p) > 0; {
			n := min(len(p), 4096)
			d.Write(p[:n])
			p = p[n:]
			for f, ok := d.Next(); ok; f, ok = d.Next() {
				out = f.AppendJSON(out[:0])
			}
		}
	}
	run() // warm up: grow buffers once
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(sentences), "ns/sentence")
}

// BenchmarkSentence is the steady-state cost of one GGA+RMC cycle.
func BenchmarkSentence(b *testing.B) {
	cycle := []byte("$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,*7D\r\n" +
		"$GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A*2D\r\n")
	d := NewDecoder(Options{})
	var out []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(cycle)))
	for i := 0; i < b.N; i++ {
		d.Write(cycle)
		for f, ok := d.Next(); ok; f, ok = d.Next() {
			out = f.AppendJSON(out[:0])
		}
	}
}

func TestDecodeZeroAllocs(t *testing.T) {
	data, err := os.ReadFile("testdata/gpsd/telit-he910.log")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder(Options{})
	var out []byte
	run := func() {
		d.Write(data)
		for f, ok := d.Next(); ok; f, ok = d.Next() {
			out = f.AppendJSON(out[:0])
		}
	}
	run()
	if a := testing.AllocsPerRun(20, run); a != 0 {
		t.Fatalf("decoding a log allocates %v times in steady state, want 0", a)
	}
}
