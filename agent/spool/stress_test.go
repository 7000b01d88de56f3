package spool

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The agent appends from its pipeline while the transport takes, commits
// and releases from its own goroutine, with the group-commit ticker running.
// Run with -race. Every record appended is, at the end, either committed
// exactly once or still in the spool; none is taken twice while in flight.
func TestSpoolConcurrentUse(t *testing.T) {
	forEachMedium(t, func(t *testing.T, m medium) {
		s := openSpool(t, m, Options{SyncInterval: 3 * time.Millisecond, LiveWindow: 5 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			appended  = map[uint64]bool{}
			committed = map[uint64]bool{}
		)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 7))
				for n := 0; ctx.Err() == nil && n < 30_000; n++ {
					q := s.NextSeq()
					if _, err := s.Append(Item{Seq: q, Priority: kestrel.Priority(r.IntN(4)), Time: time.Now().UnixMilli(), Data: payload(q)}); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					appended[q] = true
					mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(9, 9))
			var items []Item
			inflight := map[uint64]bool{}
			for ctx.Err() == nil {
				select {
				case <-s.Ready():
				case <-time.After(time.Millisecond):
				}
				items = s.Take(items, 1+r.IntN(50), 1+r.IntN(4000))
				seqs := make([]uint64, 0, len(items))
				for _, it := range items {
					if inflight[it.Seq] {
						t.Errorf("seq %d taken while in flight", it.Seq)
					}
					if !bytes.Equal(it.Data, payload(it.Seq)) {
						t.Errorf("seq %d payload %q", it.Seq, it.Data)
					}
					seqs = append(seqs, it.Seq)
				}
				if r.IntN(5) == 0 {
					s.Release(seqs)
					continue
				}
				if err := s.Commit(seqs); err != nil {
					t.Error(err)
				}
				mu.Lock()
				for _, q := range seqs {
					if committed[q] {
						t.Errorf("seq %d committed twice", q)
					}
					committed[q] = true
				}
				mu.Unlock()
			}
		}()
		wg.Wait()
		left := map[uint64]bool{}
		for _, it := range s.Take(nil, 1<<30, 0) {
			left[it.Seq] = true
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for q := range appended {
			if committed[q] == left[q] {
				t.Fatalf("seq %d: committed %v, left %v (want exactly one)", q, committed[q], left[q])
			}
		}
		t.Logf("%d appended, %d committed, %d left", len(appended), len(committed), len(left))
	})
}
