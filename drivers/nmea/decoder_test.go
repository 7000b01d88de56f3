package nmea

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

const cycle = "$GPGGA,193221.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,*7D\r\n" +
	"$GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A*2D\r\n"

// nm frames a sentence body with its checksum.
func nm(body string) string {
	var cs byte
	for i := 0; i < len(body); i++ {
		cs ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X", body, cs)
}

func TestFramingSurvivesNoise(t *testing.T) {
	in := "\x00\xff\xfegarbage" + // leading garbage
		"$GPGGA,193221.00,2037.7\r\n" + // truncated (bad checksum)
		"$GPGGA,193221.00,2037.72792,N,$GPZDA,193223.00,23,12,2007,00,00*69\n" + // spliced
		nm("GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A") + "\n\r" + // LF CR
		"$GPXYZ,unknown*00\r\n" + // bad checksum
		nm("PUBX,00,whatever") + "\r\n" + // proprietary, skipped
		"$" + strings.Repeat("A", 200) + "*00\r\n" + // over-long
		"$GPGSA,A,3,10,\x1b[0m28*00\r\n" // escape inside
	d := NewDecoder(Options{})
	d.Write([]byte(in))
	st := d.Stats()
	if st.Sentences < 2 || st.NoiseBytes < 10 || st.Truncated != 1 || st.Overlong != 1 || st.Framing != 1 || st.BadChecksum < 1 {
		t.Fatalf("stats %+v", st)
	}
	f, ok := d.Flush()
	if !ok {
		t.Fatal("no fix")
	}
	if got := string(f.AppendJSON(nil)); got != `{"time":"2007-12-23T19:32:21.000Z","lat":20.6287983,"lon":-87.06808,"alt":null,"speed":0.05,"track":201.8,"mode":2}` {
		t.Fatalf("fix %s", got)
	}
}

func TestDateHeaderDatesGGA(t *testing.T) {
	in := "# Date: 2019-06-19\n" + nm("GPGGA,235959.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,") + "\r\n" +
		nm("GPGGA,000000.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,") + "\r\n"
	out := string(decodeAll(t, []byte(in), Options{}))
	want := `{"time":"2019-06-19T23:59:59.000Z","lat":20.6287987,"lon":-87.0680797,"alt":-30.4,"speed":null,"track":null,"mode":3}
{"time":"2019-06-20T00:00:00.000Z","lat":20.6287987,"lon":-87.0680797,"alt":-30.4,"speed":null,"track":null,"mode":3}
`
	if out != want {
		t.Fatalf("got\n%swant\n%s", out, want)
	}
	// Without the header there is no date, so no fix.
	if out := decodeAll(t, []byte(in[strings.IndexByte(in, '\n')+1:]), Options{}); len(out) != 0 {
		t.Fatalf("undated fixes printed: %s", out)
	}
}

func TestRolloverRepaired(t *testing.T) {
	// A receiver with the week-rollover bug says 2006 in 2025.
	now := func() time.Time { return time.Date(2025, 11, 2, 12, 0, 0, 0, time.UTC) }
	d := NewDecoder(Options{Now: now})
	d.Write([]byte(nm("GPRMC,193221.00,A,2037.7279,N,08704.0848,W,00.1,201.8,021105,01,W,A") + "\r\n"))
	f, ok := d.Flush()
	if !ok {
		t.Fatalf("no fix; stats %+v", d.Stats())
	}
	want := time.Date(2005, 11, 2, 19, 32, 21, 0, time.UTC).Add(1024 * 7 * 24 * time.Hour)
	if got := time.UnixMilli(f.Time).UTC(); !got.Equal(want) {
		t.Fatalf("time %s, want %s", got, want)
	}
}

func TestOldLogIsNotRepairedIntoTheFuture(t *testing.T) {
	// A real 2010 track replayed in 2026 is more than 512 weeks old, but
	// adding 1024 weeks would date it 2030: it must stay as recorded.
	now := func() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) }
	d := NewDecoder(Options{Now: now})
	d.Write([]byte(nm("GPRMC,093630.00,A,4527.155737,N,01401.091641,E,0.050,284.13,031010,,,A") + "\r\n"))
	f, ok := d.Flush()
	if !ok {
		t.Fatalf("no fix; stats %+v", d.Stats())
	}
	want := time.Date(2010, 10, 3, 9, 36, 30, 0, time.UTC)
	if got := time.UnixMilli(f.Time).UTC(); !got.Equal(want) {
		t.Fatalf("time %s, want %s", got, want)
	}
}

func TestDriverEmitsRecords(t *testing.T) {
	var in strings.Builder
	for i := 1; i <= 4; i++ {
		in.WriteString(nm(fmt.Sprintf("GPGGA,19322%d.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,", i)) + "\r\n")
		in.WriteString(nm(fmt.Sprintf("GPRMC,19322%d.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A", i)) + "\r\n")
	}
	var recs []kestrel.Record
	err := New(strings.NewReader(in.String()), Options{Now: func() time.Time { return time.Date(2007, 12, 24, 0, 0, 0, 0, time.UTC) }}).Run(context.Background(), func(r kestrel.Record) { recs = append(recs, r) })
	if err == nil || !strings.Contains(err.Error(), io.EOF.Error()) {
		t.Fatalf("Run = %v, want wrapped EOF", err)
	}
	var pos []*kestrel.Position
	var status []*kestrel.GPSStatus
	for _, r := range recs {
		switch b := r.Body.(type) {
		case *kestrel.Position:
			pos = append(pos, b)
			if want := time.Date(2007, 12, 23, 19, 32, 21+len(pos)-1, 0, time.UTC).UnixMilli(); r.Time != want {
				t.Fatalf("fix %d time %d, want %d", len(pos), r.Time, want)
			}
		case *kestrel.GPSStatus:
			status = append(status, b)
		}
	}
	if len(pos) != 4 || pos[0].Lat != 206287983 || pos[0].Alt != -3040 || pos[0].Flags&kestrel.HasAlt == 0 {
		t.Fatalf("positions %+v", pos)
	}
	if len(status) == 0 || status[0].State != kestrel.GPSFix {
		t.Fatalf("status %+v", status)
	}
}

// TestChunkingInvariant: the fixes must not depend on how reads split the
// stream (byte by byte, as a slow UART delivers it, or all at once).
func TestChunkingInvariant(t *testing.T) {
	for _, name := range []string{"triton400", "et-332", "tcp-torture", "gp-320fw-2019-04-07-coldboot", "quectel-l76k-nmea"} {
		data, err := os.ReadFile("testdata/gpsd/" + name + ".log")
		if err != nil {
			t.Fatal(err)
		}
		whole := NewDecoder(Options{})
		whole.Write(data)
		var a, b []byte
		for f, ok := whole.Flush(); ok; f, ok = whole.Flush() {
			a = append(f.AppendJSON(a), '\n')
		}
		single := NewDecoder(Options{})
		for i := range data {
			single.Write(data[i : i+1])
		}
		for f, ok := single.Flush(); ok; f, ok = single.Flush() {
			b = append(f.AppendJSON(b), '\n')
		}
		if string(a) != string(b) || len(a) == 0 {
			t.Errorf("%s: whole and byte-by-byte differ (or are empty):\n%s\n---\n%s", name, a, b)
		}
		if whole.Stats() != single.Stats() {
			t.Errorf("%s: stats differ %+v vs %+v", name, whole.Stats(), single.Stats())
		}
	}
}

// TestDriverReleasesOnQuietLine: once the receiver has ended a cycle and
// the line goes quiet, the fix is emitted without waiting for the next one.
func TestDriverReleasesOnQuietLine(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for i := 1; i <= 2; i++ {
		fmt.Fprintf(w, "%s\r\n%s\r\n",
			nm(fmt.Sprintf("GPGGA,19322%d.00,2037.72792,N,08704.08478,W,1,04,1.7,-30.40,M,-13.9,M,,", i)),
			nm(fmt.Sprintf("GPRMC,19322%d.00,A,2037.7279,N,08704.0848,W,00.1,201.8,231207,01,W,A", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan int64, 8)
	done := make(chan error, 1)
	go func() {
		done <- New(r, Options{Now: func() time.Time { return time.Date(2007, 12, 24, 0, 0, 0, 0, time.UTC) }}).Run(ctx, func(rec kestrel.Record) {
			if _, ok := rec.Body.(*kestrel.Position); ok {
				got <- rec.Time
			}
		})
	}()
	base := time.Date(2007, 12, 23, 19, 32, 21, 0, time.UTC).UnixMilli()
	for i := int64(0); i < 2; i++ {
		select {
		case ts := <-got:
			if ts != base+i*1000 {
				t.Fatalf("fix %d at %d, want %d", i, ts, base+i*1000)
			}
		case <-ctx.Done():
			t.Fatalf("fix %d not released while the line was quiet", i)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}
