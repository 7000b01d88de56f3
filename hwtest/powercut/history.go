package powercut

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"

	kestrel "github.com/kestrel-edge/kestrel"
)

// history is the workload's events (guest_test.go), indexed for the checks.
// Event indexes count lines; a mark "eN" in the write log says the first N
// events had happened when it was logged.
type history struct {
	n       int
	boots   []bootEvent
	recs    map[uint64]*recHist
	maxSeqs []uint64 // maxSeqs[i]: the highest seq handed out in events [0, i)
	durable []uint64 // seqs reported durable, in order of report
}

type bootEvent struct {
	at   int
	boot uint32
}

// bootBefore is the highest boot id the spool reported in events [0, n).
func (h *history) bootBefore(n int) uint32 {
	var b uint32
	for _, e := range h.boots {
		if e.at < n {
			b = max(b, e.boot)
		}
	}
	return b
}

type recHist struct {
	prio      kestrel.Priority
	appended  int // event index of 's'
	durableAt int // of 'd'; -1 never
	commitAt  int // of 'c'; -1 never
	evicted   bool
}

func parseHistory(b []byte) (*history, error) {
	h := &history{recs: map[uint64]*recHist{}, maxSeqs: []uint64{0}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	var maxSeq uint64
	for i := 0; sc.Scan(); i++ {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || len(f[0]) != 1 {
			return nil, fmt.Errorf("history line %d: %q", i+1, sc.Bytes())
		}
		nums := make([]uint64, len(f)-1)
		for j, x := range f[1:] {
			n, err := strconv.ParseUint(string(x), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("history line %d: %v", i+1, err)
			}
			nums[j] = n
		}
		rec := func(q uint64) (*recHist, error) {
			r := h.recs[q]
			if r == nil {
				return nil, fmt.Errorf("history line %d: seq %d never appended", i+1, q)
			}
			return r, nil
		}
		switch f[0][0] {
		case 'b':
			h.boots = append(h.boots, bootEvent{at: i, boot: uint32(nums[0])})
		case 's':
			if len(nums) != 2 || nums[1] > uint64(kestrel.PriorityEmergency) {
				return nil, fmt.Errorf("history line %d: %q", i+1, sc.Bytes())
			}
			if h.recs[nums[0]] != nil || nums[0] <= maxSeq && maxSeq > 0 {
				return nil, fmt.Errorf("history line %d: seq %d handed out twice or out of order", i+1, nums[0])
			}
			h.recs[nums[0]] = &recHist{prio: kestrel.Priority(nums[1]), appended: i, durableAt: -1, commitAt: -1}
			maxSeq = nums[0]
		case 'd', 'c', 'v':
			for _, q := range nums {
				r, err := rec(q)
				if err != nil {
					return nil, err
				}
				switch f[0][0] {
				case 'd':
					r.durableAt = i
					h.durable = append(h.durable, q)
				case 'c':
					if r.commitAt < 0 {
						r.commitAt = i
					}
				case 'v':
					r.evicted = true
				}
			}
		default:
			return nil, fmt.Errorf("history line %d: %q", i+1, sc.Bytes())
		}
		h.maxSeqs = append(h.maxSeqs, maxSeq)
		h.n = i + 1
	}
	return h, sc.Err()
}
