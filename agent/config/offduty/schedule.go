package offduty

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Bounds on a schedule.
const (
	MaxEntries  = 32
	MaxEntryLen = 64
)

const (
	minutesPerDay  = 24 * 60
	minutesPerWeek = 7 * minutesPerDay
)

// Schedule is a weekly schedule of local-time intervals.
//
// Grammar of one entry (case-insensitive, single spaces optional around
// the separators):
//
//	entry = days " " clock "-" clock
//	days  = span *("," span)
//	span  = day | day "-" day          ; "Fri-Mon" wraps through Sunday
//	day   = "Mon" | "Tue" | "Wed" | "Thu" | "Fri" | "Sat" | "Sun"
//	clock = HH ":" MM                  ; 00:00 to 23:59, and 24:00 as an end
//
// An interval starts on each listed day at the first clock. When the
// second clock is not after the first, the interval runs past midnight
// and ends on the next day ("Mon-Fri 18:00-08:00" is Monday 18:00 to
// Tuesday 08:00, ..., Friday 18:00 to Saturday 08:00). "00:00-24:00" is
// the whole day; equal clocks are refused as ambiguous. The clocks are
// wall-clock time in the schedule's location, so an interval keeps its
// local hours across daylight-saving changes; a start in the hour that a
// spring-forward skips begins when the clock resumes.
type Schedule struct {
	loc   *time.Location
	spans [][2]int // [start, end) in minutes from Monday 00:00; end may pass the week's end
	edges []int    // minutes of the day at which some interval starts or ends, sorted
}

var dayNames = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

// ParseSchedule parses entries in loc (nil: UTC).
func ParseSchedule(entries []string, loc *time.Location) (*Schedule, error) {
	if len(entries) > MaxEntries {
		return nil, fmt.Errorf("%d entries, at most %d", len(entries), MaxEntries)
	}
	if loc == nil {
		loc = time.UTC
	}
	s := &Schedule{loc: loc}
	for i, e := range entries {
		spans, err := parseEntry(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i, trunc(e), err)
		}
		s.spans = append(s.spans, spans...)
	}
	for _, sp := range s.spans {
		s.edges = append(s.edges, sp[0]%minutesPerDay, sp[1]%minutesPerDay)
	}
	slices.Sort(s.edges)
	s.edges = slices.Compact(s.edges)
	return s, nil
}

func trunc(s string) string {
	if len(s) > MaxEntryLen {
		return s[:MaxEntryLen] + "..."
	}
	return s
}

func parseEntry(e string) ([][2]int, error) {
	if len(e) > MaxEntryLen {
		return nil, fmt.Errorf("longer than %d bytes", MaxEntryLen)
	}
	days, clocks, ok := strings.Cut(strings.TrimSpace(e), " ")
	if !ok {
		return nil, errors.New(`want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 18:00-08:00"`)
	}
	from, to, ok := strings.Cut(strings.TrimSpace(clocks), "-")
	if !ok {
		return nil, errors.New(`want a time range "HH:MM-HH:MM"`)
	}
	start, err := parseClock(strings.TrimSpace(from), false)
	if err != nil {
		return nil, err
	}
	end, err := parseClock(strings.TrimSpace(to), true)
	if err != nil {
		return nil, err
	}
	if start == end {
		return nil, errors.New("start equals end: say 00:00-24:00 for a whole day")
	}
	if end <= start {
		end += minutesPerDay // past midnight, into the next day
	}
	var out [][2]int
	seen := [7]bool{}
	for _, span := range strings.Split(days, ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(span), "-")
		d0, err := parseDay(a)
		if err != nil {
			return nil, err
		}
		d1 := d0
		if isRange {
			if d1, err = parseDay(b); err != nil {
				return nil, err
			}
		}
		for d := d0; ; d = (d + 1) % 7 {
			if !seen[d] {
				seen[d] = true
				out = append(out, [2]int{d*minutesPerDay + start, d*minutesPerDay + end})
			}
			if d == d1 {
				break
			}
		}
	}
	return out, nil
}

func parseDay(s string) (int, error) {
	i := slices.Index(dayNames, strings.ToLower(strings.TrimSpace(s)))
	if i < 0 {
		return 0, fmt.Errorf("unknown day %q (want Mon, Tue, Wed, Thu, Fri, Sat or Sun)", trunc(s))
	}
	return i, nil
}

func parseClock(s string, end bool) (int, error) {
	if len(s) != 5 || s[2] != ':' || !digit(s[0]) || !digit(s[1]) || !digit(s[3]) || !digit(s[4]) {
		return 0, fmt.Errorf("bad time %q (want HH:MM)", trunc(s))
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h == 24 && m == 0 && end {
		return minutesPerDay, nil
	}
	if h > 23 || m > 59 {
		return 0, fmt.Errorf("bad time %q (00:00 to 23:59, or 24:00 as an end)", s)
	}
	return h*60 + m, nil
}

func digit(c byte) bool { return c >= '0' && c <= '9' }

// Empty reports a schedule with no interval.
func (s *Schedule) Empty() bool { return s == nil || len(s.spans) == 0 }

// Active reports whether t falls in an interval, on the local wall clock.
func (s *Schedule) Active(t time.Time) bool {
	if s.Empty() {
		return false
	}
	l := t.In(s.loc)
	wd := (int(l.Weekday()) + 6) % 7 // Monday 0
	w := wd*minutesPerDay + l.Hour()*60 + l.Minute()
	for _, sp := range s.spans {
		if (sp[0] <= w && w < sp[1]) || (sp[0] <= w+minutesPerWeek && w+minutesPerWeek < sp[1]) {
			return true
		}
	}
	return false
}

// Next returns the first instant after t at which Active changes, and
// false when it never does (no interval, or every minute covered).
func (s *Schedule) Next(t time.Time) (time.Time, bool) {
	if s.Empty() {
		return time.Time{}, false
	}
	now := s.Active(t)
	l := t.In(s.loc)
	for day := 0; day <= 8; day++ {
		for _, m := range s.edges {
			c := time.Date(l.Year(), l.Month(), l.Day()+day, m/60, m%60, 0, 0, s.loc)
			if c.After(t) && s.Active(c) != now {
				return c, true
			}
		}
	}
	return time.Time{}, false
}
