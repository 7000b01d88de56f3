package spool

import (
	"fmt"
	"strconv"
	"strings"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Every record the spool evicts by policy is counted in Metrics (Evicted,
// EvictedBytes, per lane) and logged by seq range: a warning "spool
// evicted by policy" once per group-commit round that evicted anything, so
// that a gap the platform sees can be matched to the evictions that made
// it. Together with the records delivered, still held, refused at Append
// (ErrFull, which the caller logs), or dropped as unreadable (logged, and
// counted in RecoveryUnreadable), they account for every seq handed out.

// evictReason says which bound an eviction kept.
type evictReason uint8

const (
	evictedOverBound  evictReason = iota // MaxBytes (or the other lanes' share of it)
	evictedFromMemory                    // MemBytes, while storage fails
	evictedForSpace                      // a full medium: written records, whole segments
	evictedByAge                         // MaxAge
	numEvictReasons
)

var evictReasonKeys = [numEvictReasons]string{"max_bytes", "memory", "full_medium", "max_age"}

// evictionReport is what was evicted since it was last logged.
type evictionReport struct {
	records uint64
	bytes   uint64
	lanes   [kestrel.NumPriorities]uint64
	why     [numEvictReasons]uint64
	// ranges holds the seqs evicted, in the order evicted: a seq above the
	// last range's end extends it (Records counts the evicted seqs inside,
	// which records of other lanes that were kept may interleave).
	ranges []SeqRange
	more   uint64 // records whose range did not fit in ranges
}

// countEviction counts an eviction by policy of e, from lane p, before
// kill. Callers hold s.mu.
func (s *Spool) countEviction(p kestrel.Priority, e *entry, why evictReason) {
	s.m.Evicted++
	s.m.EvictedBytes += uint64(e.size)
	s.m.Lanes[p].Evicted++
	r := &s.evicted
	r.records++
	r.bytes += uint64(e.size)
	r.lanes[p]++
	r.why[why]++
	if k := len(r.ranges) - 1; k >= 0 && e.seq > r.ranges[k].Last {
		r.ranges[k].Last = e.seq
		r.ranges[k].Records++
		return
	}
	if len(r.ranges) >= maxLostRanges {
		r.more++
		return
	}
	r.ranges = append(r.ranges, SeqRange{First: e.seq, Last: e.seq, Records: 1})
}

// logEvictions logs the evictions counted since the last call, if any.
func (s *Spool) logEvictions() {
	s.mu.Lock()
	r := s.evicted
	s.evicted = evictionReport{ranges: r.ranges[:0:0]}
	s.mu.Unlock()
	if r.records == 0 {
		return
	}
	args := []any{"records", r.records, "bytes", r.bytes, "ranges", formatRanges(r.ranges)}
	if r.more > 0 {
		args = append(args, "records_beyond_ranges", r.more)
	}
	for p := kestrel.PriorityBulk; p < kestrel.PriorityEmergency; p++ {
		if r.lanes[p] > 0 {
			args = append(args, p.String(), r.lanes[p])
		}
	}
	for why, n := range r.why {
		if n > 0 {
			args = append(args, evictReasonKeys[why], n)
		}
	}
	s.log.Warn(evictionMsg, args...)
}

// formatRanges writes ranges as "FIRST-LAST:RECORDS ...".
func formatRanges(rs []SeqRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d-%d:%d", r.First, r.Last, r.Records)
	}
	return b.String()
}

// evictionMsg is the message of the log line logEvictions writes.
const evictionMsg = "spool evicted by policy"

// ParseEvictionLog collects the evicted seq ranges from the "spool evicted
// by policy" lines of a log in slog's text format (the agent's), for tests
// and tools that account for every seq handed out. A line whose ranges did
// not all fit (records_beyond_ranges) is an error: the log then cannot
// name every evicted seq.
func ParseEvictionLog(log string) ([]SeqRange, error) {
	var out []SeqRange
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="`+evictionMsg+`"`) {
			continue
		}
		if strings.Contains(line, " records_beyond_ranges=") {
			return out, fmt.Errorf("spool: an eviction log line holds only some of its ranges: %s", strings.TrimSpace(line))
		}
		v, ok := logAttr(strings.TrimRight(line, "\n"), "ranges")
		if !ok {
			return out, fmt.Errorf("spool: an eviction log line without ranges: %s", strings.TrimSpace(line))
		}
		rs, err := parseRanges(v)
		if err != nil {
			return out, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// parseRanges reads formatRanges' output.
func parseRanges(v string) ([]SeqRange, error) {
	var out []SeqRange
	for _, f := range strings.Fields(v) {
		var r SeqRange
		if _, err := fmt.Sscanf(f, "%d-%d:%d", &r.First, &r.Last, &r.Records); err != nil {
			return nil, fmt.Errorf("spool: evicted range %q: %w", f, err)
		}
		if r.Last < r.First || r.Records < 1 || uint64(r.Records) > r.Last-r.First+1 {
			return nil, fmt.Errorf("spool: evicted range %q is not a range", f)
		}
		out = append(out, r)
	}
	return out, nil
}

// logAttr returns the value of key in a slog text line, unquoted.
func logAttr(line, key string) (string, bool) {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		q, err := strconv.QuotedPrefix(v)
		if err != nil {
			return "", false
		}
		s, err := strconv.Unquote(q)
		return s, err == nil
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v, true
}
