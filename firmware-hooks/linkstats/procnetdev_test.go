package linkstats

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

func TestParseProcNetDevCapture(t *testing.T) {
	f, err := os.Open("testdata/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := parseProcNetDev(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]counters{
		"lo":   {RxBytes: 3193, RxPackets: 29, TxBytes: 3193, TxPackets: 29},
		"ifb0": {},
		"ifb1": {},
		"eth0": {RxBytes: 161966598, RxPackets: 4159, TxBytes: 280640, TxPackets: 2895},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d interfaces %v, want %d", len(got), got, len(want))
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s: got %+v, want %+v", n, got[n], w)
		}
	}
}

func TestParseProcNetDevEdgeCases(t *testing.T) {
	hdr := "Inter-|   Receive                                                |  Transmit\n" +
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	// Old kernels print "%6s:%8lu", so a long name runs into the first number.
	got, err := parseProcNetDev(strings.NewReader(hdr +
		"wlan0123:18446744073709551615 2 0 7 0 0 0 0 5 6 0 1 0 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := got["wlan0123"]; c.RxBytes != 18446744073709551615 || c.Drops != 8 || c.TxPackets != 6 {
		t.Errorf("got %+v", c)
	}
	for _, bad := range []string{
		"eth0: 1 2 3\n", // truncated
		"eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n", // not a number
		": 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",    // no name
		"eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 18446744073709551616\n",
	} {
		if _, err := parseProcNetDev(strings.NewReader(hdr + bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func FuzzParseProcNetDev(f *testing.F) {
	b, err := os.ReadFile("testdata/proc/net/dev")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("a:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"))
	f.Add([]byte("\n\n::::\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := parseProcNetDev(strings.NewReader(string(in)))
		if err == nil {
			for n := range m {
				if n == "" {
					t.Fatal("empty interface name accepted")
				}
			}
		}
	})
}

// TestProcfsSourceReportsDeltas drives Run over a fake /proc whose counters
// move between reads, as a real one does.
func TestProcfsSourceReportsDeltas(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "net", "dev")
	if err := os.MkdirAll(filepath.Dir(dev), 0o755); err != nil {
		t.Fatal(err)
	}
	capture, err := os.ReadFile("testdata/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		t.Helper()
		tmp := dev + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dev); err != nil {
			t.Fatal(err)
		}
	}
	write(string(capture))

	s := New(Options{Period: 20 * time.Millisecond, ProcRoot: root, ProcfsOnly: true})
	if s.Mode() != ModeProcfs {
		t.Fatalf("mode %q", s.Mode())
	}
	firstRead := make(chan struct{})
	s.r = &notifyingReader{counterReader: s.r, first: firstRead}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu   sync.Mutex
		recs []*kestrel.LinkUsage
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		s.Run(ctx, func(r kestrel.Record) {
			mu.Lock()
			defer mu.Unlock()
			if r.Priority != kestrel.PriorityBulk {
				t.Errorf("priority %v", r.Priority)
			}
			recs = append(recs, r.Body.(*kestrel.LinkUsage))
		})
	}()
	// eth0 moves by 1000/10 rx, 500/5 tx and 3 drops; lo moves but is not
	// reported by default; ifb0 stays put and costs nothing.
	moved := strings.Replace(string(capture),
		"eth0: 161966598    4159    0    0    0     0          0         0   280640    2895    0    0",
		"eth0: 161967598    4169    0    1    0     0          0         0   281140    2900    0    2", 1)
	moved = strings.Replace(moved, "lo:    3193      29", "lo:    3293      30", 1)
	if moved == string(capture) {
		t.Fatal("capture did not match the edit")
	}
	<-firstRead // Run has taken the old values as its baseline
	write(moved)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(recs)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(recs) != 1 {
		t.Fatalf("got %d records %+v, want only eth0", len(recs), recs)
	}
	r := recs[0]
	want := kestrel.LinkUsage{Iface: "eth0", Source: "procfs", IntervalMS: r.IntervalMS,
		RxBytes: 1000, RxPackets: 10, TxBytes: 500, TxPackets: 5, Drops: 3}
	if *r != want {
		t.Errorf("got %+v, want %+v", *r, want)
	}
}

func TestCounterReset(t *testing.T) {
	prev := counters{RxBytes: 100, TxBytes: 100}
	if d := (counters{RxBytes: 10, TxBytes: 200}).sub(prev); d.RxBytes != 10 || d.TxBytes != 200 {
		t.Errorf("reset: %+v", d)
	}
}

// notifyingReader tells the test when Run has taken its baseline.
type notifyingReader struct {
	counterReader
	first chan struct{}
	once  sync.Once
}

func (n *notifyingReader) read() (map[string]counters, error) {
	m, err := n.counterReader.read()
	n.once.Do(func() { close(n.first) })
	return m, err
}
