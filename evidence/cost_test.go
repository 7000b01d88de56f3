package evidence

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// TestCheckpointLinkCost measures what checkpoints add to the link, per
// fix, at the default evidence.checkpoint_interval: every real track's
// fixes are stamped as the agent stamps them, batched by the default
// broker.batch_max, with and without a checkpoint at the first fix past
// each interval, and the payload bytes compared. The target (issue 14) is
// at most 0.5 B per fix at 1 Hz: the bytes one checkpoint adds, over the
// fixes of one interval at 1 Hz. Tracks recorded at a slower rate pay the
// same bytes per checkpoint over fewer fixes (logged per track).
// Numbers: go test ./evidence -run LinkCost -v.
func TestCheckpointLinkCost(t *testing.T) {
	def := config.Defaults()
	interval := def.Evidence.CheckpointInterval.Duration
	batch := def.Broker.BatchMax
	files, _ := filepath.Glob("../transport/wire/testdata/tracks/*.fixes.jsonl")
	if len(files) == 0 {
		t.Fatal("no tracks")
	}
	_, s := newKey(t, 1)
	var totalCkpts, totalPlain, totalWith int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var plain, with []kestrel.Record
		ch := NewChain(Head{})
		seq := uint64(0)
		var last int64
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			tm, p, err := wire.ParseFixJSON(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			seq++
			pos := p
			r := kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-1", Boot: 1, Seq: seq, Time: tm, Priority: kestrel.PriorityNormal}, Body: &pos}
			plain = append(plain, r)
			r2 := r
			r2.Seq = uint64(len(with) + 1)
			_ = ch.Add(&r2)
			with = append(with, r2)
			if last == 0 {
				last = tm
			}
			if time.Duration(tm-last)*time.Millisecond >= interval {
				c := kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-1", Boot: 1, Seq: uint64(len(with) + 1), Time: tm, Priority: kestrel.PriorityNormal}}
				if err := ch.Checkpoint(&c, kestrel.CheckpointInterval, s); err != nil {
					t.Fatal(err)
				}
				_ = ch.Add(&c)
				with = append(with, c)
				last = tm
			}
		}
		a, b := encodedSize(t, plain, batch), encodedSize(t, with, batch)
		t.Logf("%s: %d fixes, %d checkpoints, %d → %d bytes: %.3f B/fix", filepath.Base(f), len(plain), len(with)-len(plain), a, b, float64(b-a)/float64(len(plain)))
		totalCkpts += len(with) - len(plain)
		totalPlain += a
		totalWith += b
	}
	per := float64(totalWith-totalPlain) / float64(totalCkpts)
	cost := per / interval.Seconds()
	t.Logf("all tracks: %d checkpoints, %.1f B each: %.3f B/fix at 1 Hz and %v, batches of %d", totalCkpts, per, cost, interval, batch)
	if cost > 0.5 {
		t.Errorf("checkpoints cost %.3f B/fix, want at most 0.5", cost)
	}
}

func encodedSize(t *testing.T, recs []kestrel.Record, batch int) int {
	var e wire.Encoder
	n := 0
	for i := 0; i < len(recs); i += batch {
		p, err := e.AppendBatch(nil, "bwc-1", recs[i:min(i+batch, len(recs))])
		if err != nil {
			t.Fatal(err)
		}
		n += len(p)
	}
	return n
}
