package platform

import (
	"slices"
	"time"
)

// seqRange is the lowest and highest seq stored for one device and boot.
type seqRange struct {
	min, max int64
	exists   bool
}

// gapRow is one row of the gaps table (id 0: not stored yet).
type gapRow struct {
	id          int64
	first, last int64
	opened      time.Time
}

// gapChanges is what applying some seqs does to the gaps table.
type gapChanges struct {
	closed   []int64  // ids whose range is now filled
	updated  []gapRow // stored rows whose range shrank
	inserted []gapRow // new open ranges
}

func (c *gapChanges) empty() bool {
	return len(c.closed) == 0 && len(c.updated) == 0 && len(c.inserted) == 0
}

// applySeqs adds the seqs just stored (any order; duplicates of stored
// records are harmless) to a device-boot's range and its open gaps, and
// returns the new range and the changes to write. A seq past either end of
// the range opens a gap to it; a seq inside an open gap shrinks, splits or
// closes it; any other seq was already stored and changes nothing.
func applySeqs(r seqRange, open []gapRow, seqs []int64, now time.Time) (seqRange, gapChanges) {
	iv := slices.Clone(open)
	slices.SortFunc(iv, func(a, b gapRow) int { return cmpInt64(a.first, b.first) })
	orig := make(map[int64]gapRow, len(open))
	for _, g := range open {
		orig[g.id] = g
	}
	var closed []int64
	for _, s := range seqs {
		switch {
		case !r.exists:
			r = seqRange{min: s, max: s, exists: true}
		case s > r.max:
			if s > r.max+1 {
				iv = append(iv, gapRow{first: r.max + 1, last: s - 1, opened: now})
			}
			r.max = s
		case s < r.min:
			if s < r.min-1 {
				iv = slices.Insert(iv, 0, gapRow{first: s + 1, last: r.min - 1, opened: now})
			}
			r.min = s
		default:
			i, found := slices.BinarySearchFunc(iv, s, func(g gapRow, v int64) int {
				if g.last < v {
					return -1
				}
				if g.first > v {
					return 1
				}
				return 0
			})
			if !found {
				continue // already stored
			}
			g := iv[i]
			switch {
			case g.first == g.last:
				iv = slices.Delete(iv, i, i+1)
				if g.id != 0 {
					closed = append(closed, g.id)
				}
			case s == g.first:
				iv[i].first++
			case s == g.last:
				iv[i].last--
			default:
				iv[i].last = s - 1
				iv = slices.Insert(iv, i+1, gapRow{first: s + 1, last: g.last, opened: g.opened})
			}
		}
	}
	ch := gapChanges{closed: closed}
	for _, g := range iv {
		if g.id == 0 {
			ch.inserted = append(ch.inserted, g)
		} else if o := orig[g.id]; o.first != g.first || o.last != g.last {
			ch.updated = append(ch.updated, g)
		}
	}
	return r, ch
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
