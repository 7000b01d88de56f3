package nmea

import (
	"fmt"
	"io"
	"math"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Options configures a Decoder.
type Options struct {
	// DateHint is the UTC day of the data, for receivers whose sentences
	// carry a time of day but no date (GGA, GLL and GNS without RMC or ZDA),
	// and the century of RMC's two-digit year. A "# Date: YYYY-MM-DD" line
	// in the stream sets it too. Zero means unknown: cycles without a date
	// from the receiver are then not reported as fixes.
	DateHint time.Time
	// Now, when set, is the system clock. It dates undated cycles to the
	// nearest day and repairs GPS week rollover (receivers that report a
	// date 1024 weeks in the past). Live drivers set it; log decoding
	// leaves it nil so that a log decodes the same on any day.
	Now func() time.Time
	// WatchdogInterval is how long the Driver waits for a valid sentence
	// before it reports GPSNoData (default 5 s).
	WatchdogInterval time.Duration
	// Heartbeat is how often the Driver repeats its GPSStatus record when
	// nothing changes (default 60 s; negative disables).
	Heartbeat time.Duration
}

// Fix is one receiver cycle merged from its sentences.
type Fix struct {
	// Time is the fix time in milliseconds since the Unix epoch, UTC.
	Time int64
	// Pos holds the position in kestrel units (1e-7 deg, cm, cm/s,
	// centidegrees). Pos.Flags says which optional values are present.
	Pos kestrel.Position
}

// Stats counts what the decoder saw since it was made.
type Stats struct {
	Sentences   uint64 // framed sentences with a valid checksum
	BadChecksum uint64 // checksum present but wrong
	NoChecksum  uint64 // line without "*hh" (rejected, as gpsd does)
	Framing     uint64 // control or 8-bit bytes inside a sentence
	Truncated   uint64 // a sentence cut short by the next '$'
	Overlong    uint64 // lines longer than the NMEA limit
	NoiseBytes  uint64 // bytes outside any valid sentence
	Ignored     uint64 // valid sentences of types that carry no fix data
	Fixes       uint64 // fixes produced
}

// BadFrames is the total of rejected sentences.
func (s Stats) BadFrames() uint64 {
	return s.BadChecksum + s.NoChecksum + s.Framing + s.Truncated + s.Overlong
}

// gpsd's fix modes and the report mask bits, as driver_nmea0183.c uses them.
const (
	modeNotSeen = 0
	modeNoFix   = 1
	mode2D      = 2
	mode3D      = 3
)

const (
	mOnline uint32 = 1 << iota
	mTime
	mLatLon
	mAlt
	mSpeed
	mTrack
	mMode
	mStatus
	mDOP
	mUsed
	mSat
	mErr
	mClear
	mReport
	mHint  // a time of day dated from the hint, not the receiver
	mOther // data gpsd keeps that a fix does not carry
	mVel   // north/east velocity (Skytraq PSTI,030)
	mGST   // error estimates from GST
	mAltZ  // altitude from PGRMZ
)

// gfix mirrors gpsd's struct gps_fix_t for the members a fix reports.
type gfix struct {
	time     int64 // ms; 0 = none
	hintTime int64 // ms from the date hint when the receiver gave no date
	lat, lon int64 // 1e-7 deg
	hasPos   bool
	alt      int64 // MSL, cm
	hasAlt   bool
	altPGRMZ bool  // alt came from Garmin's PGRMZ (feet), not GGA/GNS
	speed    int64 // cm/s
	hasSpeed bool
	track    int64 // centidegrees
	hasTrack bool
	velN     float64
	velE     float64
	hasVel   bool
	mode     int8
	status   int8
}

func (f *gfix) clear() { *f = gfix{} }

type sat struct {
	prn  int
	az   int // -1 = unknown
	ss   int
	used bool
}

const maxChannels = 184 // gpsd's MAXCHANNELS

// Decoder turns an NMEA 0183 byte stream into fixes. It is not safe for
// concurrent use.
type Decoder struct {
	opts Options

	// lexer
	st        uint8
	lineStart bool
	cookie    byte
	n         int
	buf       [maxSentence]byte
	cn        int
	cbuf      [96]byte
	field     [maxFields][]byte
	count     int
	stats     Stats

	// hint date (days since epoch; -1 = none) and its midnight tracking
	hintDay  int64
	hintSod  int64
	hintSeen bool

	// gpsd's nmea state
	century       int
	year, mon     int // year 0 = unset
	mday          int
	hour, min     int
	sec           int
	nsec          int64
	thisFrac      int64 // hhmmss.ss of the sentence, in 1e-9 units
	lastFrac      int64
	latchFrac     bool
	lasttag       int
	cycleEnders   [numTags]bool
	cycleContinue bool
	reliable      bool // gpsd's cycle_end_reliable

	lastGGATalker byte
	lastGGATime   [16]byte
	lastGGATimeN  int
	latchMode     bool
	lastGSATalker byte
	lastGSVTalker byte
	seenGSA       uint8 // bit per constellation other than GP
	seenGSV       uint8
	satsUsed      [maxChannels]int
	nUsed         int
	sky           [maxChannels]sat
	nVisible      int
	gsvAwait      int
	gsvPart       int
	gsxMore       bool

	pdop, hdop, vdop int64 // hundredths; -1 unknown
	gstLat, gstLon   int64 // cm; -1 unknown
	gstAlt           int64

	newdata gfix
	fix     gfix
	lastfix gfix
	oldfix  gfix

	// output
	pending    Fix
	hasPending bool
	queue      []Fix // completed fixes; queue[qhead:] not yet popped
	qhead      int
	lastOut    int64
	lastMode   int8 // mode of the last reported cycle
	ggaSats    int  // satellites used per the last GGA
}

// NewDecoder makes a decoder.
func NewDecoder(opts Options) *Decoder {
	d := &Decoder{opts: opts, lineStart: true, hintDay: -1, century: 2000,
		pdop: -1, hdop: -1, vdop: -1, gstLat: -1, gstLon: -1, gstAlt: -1}
	if !opts.DateHint.IsZero() {
		t := opts.DateHint.UTC()
		d.setDateHint(t.Year(), int(t.Month()), t.Day())
	} else if opts.Now != nil {
		d.century = opts.Now().UTC().Year() / 100 * 100
	}
	return d
}

func (d *Decoder) setDateHint(y, m, day int) {
	d.hintDay = daysFromCivil(y, m, day)
	d.hintSod = 0
	d.century = y - y%100
}

// Stats reports the counters.
func (d *Decoder) Stats() Stats { return d.stats }

// Status reports satellites in view and used, the fix mode and DOPs as of
// the last sentence.
func (d *Decoder) Status() kestrel.GPSStatus {
	s := kestrel.GPSStatus{
		Mode:       kestrel.FixMode(clampMode(d.lastMode)),
		SatsInView: uint8(min(d.nVisible, 255)),
		SatsUsed:   uint8(min(max(d.nUsed, d.ggaSats), 255)),
		Sentences:  d.stats.Sentences,
		BadFrames:  d.stats.BadFrames(),
		NoiseBytes: d.stats.NoiseBytes,
	}
	if d.pdop >= 0 {
		s.PDOP = uint16(min(d.pdop, 65535))
	}
	if d.hdop >= 0 {
		s.HDOP = uint16(min(d.hdop, 65535))
	}
	if d.vdop >= 0 {
		s.VDOP = uint16(min(d.vdop, 65535))
	}
	// The state follows reported cycles, not the half-merged current one,
	// so that it does not flicker while a cycle is being read.
	s.State = kestrel.GPSNoFix
	if d.lastMode >= mode2D {
		s.State = kestrel.GPSFix
	}
	return s
}

func clampMode(m int8) int8 {
	if m < modeNoFix {
		return modeNoFix
	}
	return m
}

// Next pops the next completed fix. A cycle's fix is complete once the
// next cycle has begun; Flush releases the last one.
func (d *Decoder) Next() (Fix, bool) {
	if d.qhead >= len(d.queue) {
		return Fix{}, false
	}
	f := d.queue[d.qhead]
	d.qhead++
	if d.qhead == len(d.queue) {
		// Drained: reuse the backing array from the start.
		d.queue = d.queue[:0]
		d.qhead = 0
	}
	return f, true
}

// Flush releases what is left at the end of input: queued fixes, then the
// current cycle's fix even if its end-of-cycle sentence never came.
func (d *Decoder) Flush() (Fix, bool) {
	if f, ok := d.Next(); ok {
		return f, true
	}
	// The current cycle may not have reached its end-of-cycle sentence
	// (or the detector has not learnt it yet): at the end it is complete.
	d.report()
	if !d.hasPending {
		return Fix{}, false
	}
	d.hasPending = false
	d.lastOut = d.pending.Time
	d.stats.Fixes++
	return d.pending, true
}

// Release pops a completed fix, or else the fix of the current cycle if the
// receiver has already signalled its end (gpsd's report) but no later cycle
// has begun yet. A live reader calls it when the line goes quiet between
// cycles, so that fixes are not a cycle late. Unlike Flush it never reports
// a cycle whose end has not been seen.
func (d *Decoder) Release() (Fix, bool) {
	if f, ok := d.Next(); ok {
		return f, true
	}
	if !d.hasPending {
		return Fix{}, false
	}
	d.hasPending = false
	d.lastOut = d.pending.Time
	d.stats.Fixes++
	return d.pending, true
}

// Pending reports whether a fix is held back waiting for its cycle to end.
func (d *Decoder) Pending() bool { return d.hasPending || d.qhead < len(d.queue) }

func (d *Decoder) push(f Fix) {
	d.queue = append(d.queue, f)
	d.stats.Fixes++
	d.lastOut = f.Time
}

// report is gpsd's REPORT_IS: the merged fix is what a client would see.
// Reports with the same time replace each other (gpsd may report a cycle
// more than once as late sentences arrive; the last is the complete one).
func (d *Decoder) report() {
	f := &d.fix
	d.lastMode = clampMode(f.mode)
	if f.mode < mode2D || !f.hasPos {
		d.lastMode = modeNoFix
		return
	}
	t := f.time
	if t <= 0 {
		t = f.hintTime
	}
	if t <= 0 {
		return
	}
	t = d.rollover(t)
	if d.hasPending && d.pending.Time != t {
		d.push(d.pending)
		d.hasPending = false
	}
	if !d.hasPending && t == d.lastOut {
		// Already released (Flush on a quiet line); a late duplicate.
		return
	}
	p := Fix{Time: t}
	p.Pos.Lat = int32(f.lat)
	p.Pos.Lon = int32(f.lon)
	p.Pos.Mode = kestrel.FixMode(f.mode)
	if f.hasAlt {
		p.Pos.Alt = int32(clamp(f.alt, math.MinInt32, math.MaxInt32))
		p.Pos.Flags |= kestrel.HasAlt
	}
	if f.hasSpeed {
		p.Pos.Speed = int32(clamp(f.speed, 0, math.MaxInt32))
		p.Pos.Flags |= kestrel.HasSpeed
	}
	if f.hasTrack {
		p.Pos.Track = uint16(f.track)
		p.Pos.Flags |= kestrel.HasTrack
	}
	if d.nUsed > 0 {
		p.Pos.Sats = uint8(min(d.nUsed, 255))
		p.Pos.Flags |= kestrel.HasSats
	} else if d.ggaSats > 0 {
		p.Pos.Sats = uint8(min(d.ggaSats, 255))
		p.Pos.Flags |= kestrel.HasSats
	}
	if d.hdop >= 0 {
		p.Pos.HDOP = uint16(min(d.hdop, 65535))
		p.Pos.Flags |= kestrel.HasHDOP
	}
	if d.gstLat >= 0 && d.gstLon >= 0 {
		p.Pos.EPH = uint32(math.Round(math.Hypot(float64(d.gstLat), float64(d.gstLon))))
		p.Pos.Flags |= kestrel.HasEPH
	}
	if d.gstAlt >= 0 {
		p.Pos.EPV = uint32(d.gstAlt)
		p.Pos.Flags |= kestrel.HasEPV
	}
	d.pending = p
	d.hasPending = true
}

func clamp(v, lo, hi int64) int64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

const weekMs = 7 * 24 * 3600 * 1000

// rollover repairs a receiver that lost 1024 GPS weeks: only when the
// system clock says the date is impossible (more than 512 weeks in the
// past). Logs are decoded as they are (Now unset), as gpsd's regression
// results are.
func (d *Decoder) rollover(t int64) int64 {
	if d.opts.Now == nil {
		return t
	}
	ref := d.opts.Now().UnixMilli()
	// A repair never moves a fix into the future: a receiver that lost
	// 1024 weeks reports a date about 19.6 years back, so one step lands
	// near the clock; an old log replayed (a 2010 track in 2026) stays as
	// it is.
	for i := 0; i < 4 && t < ref-512*weekMs && t+1024*weekMs <= ref+weekMs; i++ {
		t += 1024 * weekMs
	}
	return t
}

// resolve is gpsd_utc_resolve: the broken-down date and time to ms.
func (d *Decoder) resolve() int64 {
	if d.year == 0 && d.mday == 0 {
		return 0
	}
	days := daysFromCivil(d.year, d.mon, d.mday)
	return (days*86400+int64(d.hour)*3600+int64(d.min)*60+int64(d.sec))*1000 + d.nsec/1e6
}

// hintTime dates the current time of day from the hint (or the clock).
func (d *Decoder) hintTime() int64 {
	sod := int64(d.hour)*3600 + int64(d.min)*60 + int64(d.sec)
	if d.opts.Now != nil && d.hintDay < 0 {
		now := d.opts.Now().UTC()
		day := daysFromCivil(now.Year(), int(now.Month()), now.Day())
		nowSod := int64(now.Hour()*3600 + now.Minute()*60 + now.Second())
		switch {
		case sod-nowSod > 12*3600:
			day--
		case nowSod-sod > 12*3600:
			day++
		}
		return (day*86400+sod)*1000 + d.nsec/1e6
	}
	if d.hintDay < 0 {
		return 0
	}
	if d.hintSeen && sod+12*3600 < d.hintSod {
		d.hintDay++ // passed midnight
	}
	d.hintSeen = true
	d.hintSod = sod
	return (d.hintDay*86400+sod)*1000 + d.nsec/1e6
}

// mergeHHMMSS is gpsd's merge_hhmmss, including its midnight wrap (the
// day advances when the hour goes backwards).
func (d *Decoder) mergeHHMMSS(f []byte) bool {
	if !hhmmssOK(f) {
		return false
	}
	old := d.hour
	d.hour = dd(f)
	if d.hour < old {
		d.mday++
	}
	d.min = dd(f[2:])
	d.sec = dd(f[4:])
	d.nsec = 0
	if len(f) > 7 && f[6] == '.' && f[7] >= '0' && f[7] <= '9' {
		// atoi of the fraction digits scaled by their count, as gpsd does
		sub := f[7:]
		v := int64(0)
		k := 0
		for _, c := range sub {
			if c < '0' || c > '9' {
				break
			}
			if k < 9 {
				v = v*10 + int64(c-'0')
			}
			k++
		}
		if len(sub) <= 9 {
			d.nsec = v * pow10[9-len(sub)]
		}
	}
	return true
}

// mergeDDMMYY is gpsd's merge_ddmmyy with its century rules.
func (d *Decoder) mergeDDMMYY(f []byte) bool {
	if len(f) != 6 {
		return false
	}
	for _, c := range f {
		if c < '0' || c > '9' {
			return false
		}
	}
	yy := dd(f[4:])
	mon := dd(f[2:])
	mday := dd(f)
	if d.year%100 == 99 && d.year != 0 && yy == 0 {
		d.century += 100
	}
	year := d.century + yy
	if year >= 2080 {
		year -= 100
	}
	if mon < 1 || mon > 12 || mday < 1 || mday > 31 {
		return false
	}
	d.year, d.mon, d.mday = year, mon, mday
	return true
}

// registerFrac is gpsd's register_fractional_time: the cycle detector
// compares the hhmmss.ss of successive timestamped sentences.
func (d *Decoder) registerFrac(f []byte) {
	if len(f) == 0 {
		return
	}
	d.lastFrac = d.thisFrac
	v, ok := scaled(f, 9)
	if !ok {
		// safe_atof of junk: gpsd gets NaN, which never equals anything.
		v = math.MinInt64 / 2
	}
	d.thisFrac = v
	d.latchFrac = true
}

// Decode reads NMEA from r to the end and calls fn for each fix, in order.
// It is the loop behind `kestrelctl nmea decode` and `kestrelctl wire
// encode`. It stops at the first error from r (other than io.EOF) or fn.
func Decode(r io.Reader, opts Options, fn func(Fix) error) (Stats, error) {
	d := NewDecoder(opts)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			d.Write(buf[:n])
			for f, ok := d.Next(); ok; f, ok = d.Next() {
				if err := fn(f); err != nil {
					return d.Stats(), err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return d.Stats(), fmt.Errorf("nmea: read: %w", rerr)
		}
	}
	for f, ok := d.Flush(); ok; f, ok = d.Flush() {
		if err := fn(f); err != nil {
			return d.Stats(), err
		}
	}
	return d.Stats(), nil
}

// The Decoder is fed like any byte sink.
var _ io.Writer = (*Decoder)(nil)
