package spool

import (
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// TestAckDuringWriteIsNotResurrected: a record acknowledged while its group
// commit is writing it must be dropped from the store once the write
// lands. It used to be forgotten by the lane (tidied away while in
// writing), so it came back after a clean restart as if never sent.
func TestAckDuringWriteIsNotResurrected(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SyncInterval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		seq := s.NextSeq()
		if _, err := s.Append(Item{Seq: seq, Priority: kestrel.PriorityNormal, Time: time.Now().UnixMilli(), Data: []byte("a fix, encoded")}); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			var seqs []uint64
			for _, it := range s.Take(nil, 5, 1<<20) {
				seqs = append(seqs, it.Seq)
			}
			if err := s.Commit(seqs); err != nil {
				t.Fatal(err)
			}
		}
		if i%100 == 0 {
			time.Sleep(5 * time.Millisecond) // let group commits overlap the acks
		}
	}
	for {
		items := s.Take(nil, 64, 1<<20)
		if len(items) == 0 {
			break
		}
		var seqs []uint64
		for _, it := range items {
			seqs = append(seqs, it.Seq)
		}
		if err := s.Commit(seqs); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Metrics().Records; n != 0 {
		t.Fatalf("%d records before close, want 0", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := s.Metrics().Records; n != 0 {
		t.Fatalf("%d acknowledged records came back after a clean close", n)
	}
}

// TestTakeUrgentTakesOnlyUrgentLanes: the transport's emergency path must
// not pull backlog into a message that bypasses the in-flight window.
func TestTakeUrgentTakesOnlyUrgentLanes(t *testing.T) {
	s, err := OpenStore(OpenMem(NewMemDisk(0)), Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, p := range []kestrel.Priority{kestrel.PriorityNormal, kestrel.PriorityBulk, kestrel.PriorityEmergency, kestrel.PriorityNormal, kestrel.PriorityHigh} {
		if _, err := s.Append(Item{Seq: s.NextSeq(), Priority: p, Time: int64(i), Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	got := s.TakeUrgent(nil, 10, 0)
	if len(got) != 2 || got[0].Priority != kestrel.PriorityEmergency || got[1].Priority != kestrel.PriorityHigh {
		t.Fatalf("TakeUrgent = %+v, want the emergency then the high record", got)
	}
	if rest := s.Take(nil, 10, 0); len(rest) != 3 {
		t.Fatalf("Take after TakeUrgent = %d records, want the 3 others", len(rest))
	}
}
