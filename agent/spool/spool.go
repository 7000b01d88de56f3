package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Options bound and tune a Spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the records held (payload plus ~10 bytes each).
	// Default 64 MiB.
	MaxBytes int64
	// MaxAge evicts records older than this (by record time), except
	// emergency records. 0: no age bound.
	MaxAge time.Duration
	// SyncInterval is the group-commit interval: the most a power cut can
	// lose. Default 1 s. Emergency records are synced at once.
	SyncInterval time.Duration
	// LiveWindow: a record appended less than this long ago is live and
	// sent newest-first; older ones are backlog, sent oldest-first.
	// Default 10 s.
	LiveWindow time.Duration
	// SegmentBytes is the log segment size. Default 4 MiB; keep it well
	// under the free space of the partition (disk full frees whole
	// segments).
	SegmentBytes int64
	// MemBytes bounds payloads held only in memory while storage fails.
	// Default 4 MiB.
	MemBytes int64
	// SeqBlock is how many sequence numbers one durable reservation
	// covers. Default 1024.
	SeqBlock uint64
	// EmergencyBytes is the emergency lane's own budget (payload plus ~10
	// bytes each), part of MaxBytes and kept free of the other lanes.
	// Emergency records are never evicted, so past it an emergency Append
	// fails with ErrFull. Default MaxBytes/16.
	EmergencyBytes int64
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// Mono is the time elapsed on a clock that never jumps, from any
	// origin: the live window and MaxAge follow it, so a wall clock set
	// at boot (a device without an RTC starts in 1970, then NTP or GPS
	// steps it) never evicts nor reorders anything. Default: the
	// monotonic reading of Now (time.Now has one; a clock without one,
	// as in simulations, is used as is).
	Mono func() time.Duration
	// SegmentSpan seals the log's active segment once it is this old, so
	// that drained records are wiped from the medium within MaxAge and a
	// span (docs/spool.md, "Retention on the medium"). 0: MaxAge/8 (none
	// when MaxAge is 0); negative: only when full.
	SegmentSpan time.Duration
	// Key (KeyBytes, from LoadKey) lets the log read records sealed with
	// it; with Encrypt set new records are sealed (AES-256-GCM,
	// SealedStore). Encrypt without a Key is an error.
	Key     []byte
	Encrypt bool
}

// span is the segment span these options give.
func (o *Options) span() time.Duration {
	switch {
	case o.SegmentSpan < 0:
		return 0
	case o.SegmentSpan > 0:
		return o.SegmentSpan
	}
	return segmentSpan(o.MaxAge)
}

// saneWall is the earliest wall time taken for a set clock: before it, a
// device's clock has not been set since boot (no RTC), and its readings say
// nothing about elapsed time.
var saneWall = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

func (o *Options) fill() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = time.Second
	}
	if o.LiveWindow <= 0 {
		o.LiveWindow = 10 * time.Second
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.MemBytes <= 0 {
		o.MemBytes = 4 << 20
	}
	if o.SeqBlock == 0 {
		o.SeqBlock = 1024
	}
	if o.EmergencyBytes <= 0 {
		o.EmergencyBytes = o.MaxBytes / 16
	}
	o.EmergencyBytes = min(o.EmergencyBytes, o.MaxBytes)
	if o.Now == nil {
		o.Now = time.Now
	}
}

// HealthState is the spool's storage condition, for the state message.
type HealthState uint8

const (
	HealthOK       HealthState = iota
	HealthFull                 // the medium is full: evicting by policy to keep going
	HealthReadOnly             // the medium refuses writes: records held in memory only
	HealthFailing              // writes fail otherwise (I/O errors): records held in memory only
)

func (h HealthState) String() string {
	switch h {
	case HealthOK:
		return "ok"
	case HealthFull:
		return "full"
	case HealthReadOnly:
		return "read-only"
	case HealthFailing:
		return "failing"
	}
	return fmt.Sprintf("health(%d)", uint8(h))
}

// Health is the storage condition with the error behind it.
type Health struct {
	State HealthState
	Err   error     // the last storage error; nil when OK
	Since time.Time // when State was entered
}

// LaneMetrics describes one priority lane.
type LaneMetrics struct {
	Records  int    // queued + in flight
	Bytes    int64  // payload bytes
	InFlight int    // taken, not yet committed or released
	Evicted  uint64 // records evicted by policy since Open
}

// Metrics is a snapshot for the agent's state and health reporting.
type Metrics struct {
	Lanes          [kestrel.NumPriorities]LaneMetrics
	Records        int
	Bytes          int64         // charged against MaxBytes
	MaxBytes       int64         //
	EmergencyBytes int64         // the emergency lane's own budget, part of MaxBytes
	StoreBytes     int64         // occupied on the medium
	Writes         string        // how group commits reach the medium: "direct", "page-cache" or "memory"
	Sealing        string        // how new records are written: "aes-256-gcm", "aes-256-gcm-fips140-only" (module-drawn nonces) or "off"
	MemoryBytes    int64         // payloads not yet durable (waiting for the next sync, or storage failing)
	OldestAge      time.Duration // time since the oldest record was appended, on the device's monotonic clock (as MaxAge judges it); 0 when empty
	Evicted        uint64
	EvictedBytes   uint64
	Rejected       uint64 // appends refused with ErrFull
	Syncs          uint64
	SyncErrors     uint64
	// What Open found.
	Boot                 uint32
	Recovered            int
	RecoveryDropped      int // torn or corrupt regions cut off (each at least one record)
	RecoveryDroppedBytes int64
	RecoveryDuplicates   int
	// RecoveryLostRecords counts the records recovery knows were lost
	// (between damage and the next resynchronisation point), with their
	// seq ranges in RecoveryLost; RecoveryMissingSegments the segment
	// files that vanished (their records not counted: unknown).
	// RecoveryUnreadable counts records that failed to read back later.
	RecoveryLostRecords     int
	RecoveryLost            []SeqRange
	RecoveryMissingSegments int
	RecoveryUnreadable      int
	Health                  Health
}

// Ticket reports when an appended record is safe.
type Ticket struct{ g *group }

type group struct {
	done chan struct{}
	err  error
}

func newGroup() *group { return &group{done: make(chan struct{})} }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Durable is closed once the record is safe: fsynced to the medium, or
// acknowledged by the broker before its group commit (then it is never
// written at all), or when the commit failed (see Err).
func (t Ticket) Durable() <-chan struct{} {
	if t.g == nil {
		return closedChan
	}
	return t.g.done
}

// Err is nil if the record was made safe; otherwise the storage error (the
// record is still held in memory and sent, but not crash-safe). Valid once
// Durable is closed.
func (t Ticket) Err() error {
	if t.g == nil {
		return nil
	}
	select {
	case <-t.g.done:
		return t.g.err
	default:
		return nil
	}
}

// Spool: see the package documentation.
type Spool struct {
	opts     Options
	log      *slog.Logger
	store    Store
	loopDone atomic.Int64 // Unix ns when the commit loop last finished a round
	base     time.Time    // monotonic origin of entry.at
	// monoBase is Options.Mono at Open, when set.
	monoBase time.Duration

	syncMu sync.Mutex // one group commit at a time

	mu      sync.Mutex
	lanes   [kestrel.NumPriorities]lane
	bytes   int64
	mem     memBuf
	memDead int64
	group   *group   // the Tickets of records appended since the last group commit
	egroup  *group   // the same for emergency records, which a full medium may let through alone
	carry   []*group // groups not yet wholly written (a full medium): closed once everything is
	carryE  []*group // the same for emergency groups: closed once every emergency is
	closed  bool
	health  Health
	fullAt  int64 // store usage when the medium last ran out of space
	// fullRound: the medium refused a write during this group commit.
	fullRound bool
	// degraded is why the spool runs in memory only (Open could not use
	// its directory); Health never reads OK then.
	degraded error
	m        Metrics // counters only; the rest is computed in Metrics
	// evicted gathers the evictions not yet logged (logEvictions).
	evicted evictionReport
	scratch []pick
	// syncItem is reused for every Store.Append (an interface call would
	// otherwise allocate one per record).
	syncItem Item

	seqMu    sync.Mutex
	boot     uint32
	next     uint64
	reserved uint64

	// emergencyDefault: EmergencyBytes follows MaxBytes (SetLimits).
	emergencyDefault bool

	ready   chan struct{}
	kick    chan struct{}
	relimit chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type memBuf struct {
	data []byte
	refs []memRef
}

type memRef struct {
	seq  uint64
	lane uint8
}

type pick struct {
	lane uint8
	idx  int
}

// Open opens the spool in dir (created 0700; files 0600). When the directory
// cannot be used at all (read-only or failing medium), Open still returns a
// working spool that holds records in memory only, with Health saying why.
func Open(dir string, opts Options, log *slog.Logger) (*Spool, error) {
	emergencyDefault := opts.EmergencyBytes <= 0
	opts.fill()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Encrypt && opts.Key == nil {
		return nil, errors.New("spool: encryption asked for without a key")
	}
	ls, err := OpenLog(dir, opts.SegmentBytes)
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, err
		}
		log.Error("spool directory unusable; holding records in memory only", "dir", dir, "err", err)
		s, err2 := OpenStore(OpenMem(NewMemDisk(opts.MemBytes)), opts, log)
		if err2 != nil {
			return nil, err2
		}
		s.mu.Lock()
		s.degraded = err
		s.setHealthLocked(err)
		s.mu.Unlock()
		return s, nil
	}
	ls.poolMax = poolSize(opts.MaxBytes, ls.segBytes)
	ls.reserveBytes = min(opts.EmergencyBytes, ls.segBytes)
	var st Store = ls
	if opts.Key != nil {
		if st, err = NewSealed(ls, opts.Key, opts.Encrypt); err != nil {
			ls.Close()
			return nil, err
		}
	}
	s, err := OpenStore(st, opts, log)
	if err != nil {
		ls.Close()
		return nil, err
	}
	s.emergencyDefault = emergencyDefault
	return s, nil
}

// OpenStore opens a spool on any Store (the in-memory one in tests).
func OpenStore(st Store, opts Options, log *slog.Logger) (*Spool, error) {
	emergencyDefault := opts.EmergencyBytes <= 0
	opts.fill()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		opts:    opts,
		log:     log,
		store:   st,
		base:    opts.Now(),
		group:   newGroup(),
		egroup:  newGroup(),
		ready:   make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		relimit: make(chan struct{}, 1),

		emergencyDefault: emergencyDefault,
	}
	s.health.Since = opts.Now()
	if opts.Mono != nil {
		s.monoBase = opts.Mono()
	}
	wallAtOpen := opts.Now()
	meta, merr := st.LoadMeta()
	if merr != nil {
		log.Error("spool sequence high-water mark lost; continuing from the highest recovered seq", "err", merr)
	}
	var maxSeq uint64
	t0 := time.Now()
	rs, err := st.Recover(func(m RecMeta) {
		p := min(m.Priority, kestrel.PriorityEmergency)
		l := &s.lanes[p]
		if _, ok := l.insert(entry{seq: m.Seq, time: m.Time, at: s.recoveredAt(m.Time, wallAtOpen), loc: m.At, size: uint32(m.Size), where: inStore}); !ok {
			return
		}
		l.live++
		l.bytes += int64(m.Size)
		s.bytes += int64(m.Size) + recOverhead
		maxSeq = max(maxSeq, m.Seq)
	})
	if err != nil {
		return nil, fmt.Errorf("spool: recover: %w", err)
	}
	s.m.Recovered, s.m.RecoveryDropped, s.m.RecoveryDroppedBytes, s.m.RecoveryDuplicates =
		rs.Records, rs.Dropped, rs.DroppedBytes, rs.Duplicates
	s.m.RecoveryLostRecords, s.m.RecoveryLost, s.m.RecoveryMissingSegments =
		rs.LostRecords, rs.Lost, rs.MissingSegments
	s.boot = meta.Boot + 1
	s.next = max(meta.NextSeq, maxSeq+1, rs.MaxSeq+1, 1)
	s.reserved = s.next + opts.SeqBlock
	if err := st.SaveMeta(Meta{Boot: s.boot, NextSeq: s.reserved}); err != nil {
		log.Error("spool cannot persist its sequence reservation", "err", err)
		s.setHealth(err)
	}
	if rs.Dropped > 0 || rs.LostRecords > 0 || rs.MissingSegments > 0 {
		log.Warn("spool recovered", "dropped_regions", rs.Dropped, "dropped_bytes", rs.DroppedBytes,
			"lost_records", rs.LostRecords, "lost_ranges", fmt.Sprint(rs.Lost),
			"missing_segments", rs.MissingSegments, "missing_ids", fmt.Sprint(rs.MissingIDs))
	}
	log.Info("spool open", "boot", s.boot, "next_seq", s.next, "records", rs.Records,
		"dropped_regions", rs.Dropped, "dropped_bytes", rs.DroppedBytes, "lost_records", rs.LostRecords,
		"missing_segments", rs.MissingSegments, "prior_lost", rs.PriorLost, "duplicates", rs.Duplicates,
		"recovery", time.Since(t0).Round(time.Millisecond), "writes", writesOf(st), "sealing", sealingOf(st))
	if ls, ok := baseStore(st).(*LogStore); ok {
		ls.setAging(s.mono, opts.span(), func(ms int64) int64 { return s.recoveredAt(ms, wallAtOpen) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.run(ctx)
	if s.bytes > 0 {
		s.signal()
	}
	return s, nil
}

// mono is the time since Open on the monotonic clock, in ns.
func (s *Spool) mono() int64 {
	if s.opts.Mono != nil {
		return int64(s.opts.Mono() - s.monoBase)
	}
	return int64(s.opts.Now().Sub(s.base))
}

// recoveredAt is the append time given to a record found at Open, on the
// monotonic clock of this run (always <= 0, which marks it as recovered).
// Its age before this boot is known only from wall clocks: it counts only
// when the record's time and the clock now are both sane (set, and not
// going backwards); otherwise the record is taken as appended at Open, so
// a clock step can never make it look old.
func (s *Spool) recoveredAt(recTime int64, now time.Time) int64 {
	at := s.mono()
	if w := now.UnixMilli(); recTime >= saneWall && w >= recTime {
		at -= int64(time.Duration(w-recTime) * time.Millisecond)
	}
	return min(at, 0)
}

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled (coalesced, never blocking the spool) when records are
// appended or released. One signal may stand for many records: Take until
// it returns nothing before waiting again.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

// Boot is this run's boot id: one more than the previous Open's.
func (s *Spool) Boot() uint32 { return s.boot }

// NextSeq hands out the next sequence number. Numbers are reserved durably
// in blocks of Options.SeqBlock (one small fsync per block), so a crash can
// never make one repeat; the price is a gap of up to SeqBlock numbers after
// a crash (a clean Close persists the exact next number, so no gap).
func (s *Spool) NextSeq() uint64 {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	if s.next >= s.reserved {
		r := s.next + s.opts.SeqBlock
		if err := s.store.SaveMeta(Meta{Boot: s.boot, NextSeq: r}); err != nil {
			// Data must still flow; the health state tells the platform
			// that sequence numbers are no longer crash-proof.
			s.mu.Lock()
			s.setHealthLocked(err)
			s.mu.Unlock()
		}
		s.reserved = r
	}
	q := s.next
	s.next++
	return q
}

// Append adds a record. The payload is copied. The returned Ticket reports
// when it is safe. When the other lanes are over their share of MaxBytes
// (MaxBytes less EmergencyBytes) it first evicts by policy (bulk, then
// normal, then high, oldest first, never anything more urgent than the new
// record, never emergency); if that cannot make room it returns ErrFull.
// Emergency records are never evicted: past EmergencyBytes they are refused
// with ErrFull.
func (s *Spool) Append(it Item) (Ticket, error) {
	if len(it.Data) > MaxPayload {
		return Ticket{}, ErrTooLarge
	}
	p := min(it.Priority, kestrel.PriorityEmergency)
	cost := int64(len(it.Data)) + recOverhead
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Ticket{}, ErrClosed
	}
	if _, i := s.locate(it.Seq); i >= 0 {
		s.mu.Unlock()
		return Ticket{}, fmt.Errorf("spool: append seq %d: duplicate sequence number", it.Seq)
	}
	if p == kestrel.PriorityEmergency {
		// Emergency records are never evicted: they have their own
		// budget, and past it they are refused rather than let grow
		// beyond what the medium was given.
		if s.laneCharge(p)+cost > s.opts.EmergencyBytes {
			s.m.Rejected++
			s.mu.Unlock()
			return Ticket{}, ErrFull
		}
	} else if over := s.bytes - s.laneCharge(kestrel.PriorityEmergency) + cost - (s.opts.MaxBytes - s.opts.EmergencyBytes); over > 0 {
		top := min(p, kestrel.PriorityHigh)
		// Refuse before evicting anything when eviction cannot make room.
		if s.evictable(top) < over {
			s.m.Rejected++
			s.mu.Unlock()
			return Ticket{}, ErrFull
		}
		s.evict(over, top, false)
	}
	if over := int64(len(s.mem.data)) - s.memDead + int64(len(it.Data)) - s.opts.MemBytes; over > 0 && s.health.State != HealthOK {
		// Storage is failing: only memory holds records, so bound it.
		s.evict(over, min(p, kestrel.PriorityHigh), true)
	}
	off := len(s.mem.data)
	l := &s.lanes[p]
	if _, ok := l.insert(entry{seq: it.Seq, time: it.Time, at: s.mono() + 1,
		size: uint32(len(it.Data)), memOff: uint32(off), where: inMem}); !ok {
		s.mu.Unlock()
		return Ticket{}, fmt.Errorf("spool: append seq %d: duplicate sequence number", it.Seq)
	}
	s.mem.data = append(s.mem.data, it.Data...)
	s.mem.refs = append(s.mem.refs, memRef{seq: it.Seq, lane: uint8(p)})
	l.live++
	l.bytes += int64(len(it.Data))
	s.bytes += cost
	g := s.group
	if p == kestrel.PriorityEmergency {
		g = s.egroup
	}
	s.mu.Unlock()
	if p == kestrel.PriorityEmergency {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	s.signal()
	return Ticket{g: g}, nil
}

// laneCharge is what lane p's records count against the budgets.
func (s *Spool) laneCharge(p kestrel.Priority) int64 {
	return s.lanes[p].bytes + int64(s.lanes[p].live)*recOverhead
}

// evictable is what evicting every lane up to top would free.
func (s *Spool) evictable(top kestrel.Priority) int64 {
	var n int64
	for p := kestrel.PriorityBulk; p <= top && p < kestrel.PriorityEmergency; p++ {
		n += s.laneCharge(p)
	}
	return n
}

// kill removes a live entry (committed or evicted).
func (s *Spool) kill(l *lane, i int) {
	e := &l.ents[i]
	if e.st == stInflight {
		l.inflight--
	}
	e.st = stDead
	l.live--
	l.dead++
	l.bytes -= int64(e.size)
	s.bytes -= int64(e.size) + recOverhead
	switch e.where {
	case inMem:
		s.memDead += int64(e.size)
	case inStore:
		s.store.Drop(e.seq, e.loc)
	}
	// inWriting: the syncer drops it once its write is known to be good.
}

// evict removes live records in policy order until need bytes are freed,
// from lanes up to top (never emergency). memOnly limits it to records
// held only in memory (storage failing, memory bound reached).
// It returns the bytes freed.
func (s *Spool) evict(need int64, top kestrel.Priority, memOnly bool) int64 {
	var freed int64
	for p := kestrel.PriorityBulk; p <= top && p < kestrel.PriorityEmergency && freed < need; p++ {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents) && freed < need; i++ {
			e := &l.ents[i]
			if e.st == stDead || memOnly && e.where == inStore {
				continue
			}
			freed += int64(e.size) + recOverhead
			why := evictedOverBound
			if memOnly {
				why = evictedFromMemory
			}
			s.countEviction(p, e, why)
			s.kill(l, i)
		}
		l.tidy()
	}
	return freed
}

// activeChecker is a Store that can tell whether a record sits in a
// segment still being appended to.
type activeChecker interface{ InActive(at Loc) bool }

// evictForSpace evicts in policy order. With a store that can tell (the
// log), it takes only records whose eviction gives space back on the
// medium: those already written, outside a segment still being appended
// to. Evicting anything else on a full medium would throw data away and
// free nothing (an emergency arriving on a full disk once cost every
// position in the open segment); what cannot be written stays in memory,
// bounded by MemBytes, for the next group commit. Callers hold s.mu.
func (s *Spool) evictForSpace(need int64) int64 {
	act, _ := baseStore(s.store).(activeChecker)
	var freed int64
	for p := kestrel.PriorityBulk; p < kestrel.PriorityEmergency && freed < need; p++ {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents) && freed < need; i++ {
			e := &l.ents[i]
			if e.st == stDead || act != nil && (e.where != inStore || act.InActive(e.loc)) {
				continue
			}
			freed += int64(e.size) + recOverhead
			s.countEviction(p, e, evictedForSpace)
			s.kill(l, i)
		}
		l.tidy()
	}
	return freed
}

// Take returns up to max records (and about maxBytes of payload, at least
// one record) in sending order and marks them in flight. dst is reused.
// The payloads are copies the caller may keep.
func (s *Spool) Take(dst []Item, max int, maxBytes int) []Item {
	return s.take(dst, max, maxBytes, false)
}

// TakeUrgent is Take limited to the emergency and high lanes: the
// transport uses it to send an emergency while its window is full of
// backlog.
func (s *Spool) TakeUrgent(dst []Item, max int, maxBytes int) []Item {
	return s.take(dst, max, maxBytes, true)
}

func (s *Spool) take(dst []Item, max int, maxBytes int, urgentOnly bool) []Item {
	dst = dst[:0]
	if max <= 0 {
		return dst
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return dst
	}
	picks := s.scratch[:0]
	total := 0
	full := func(size int) bool {
		if len(picks) >= max || len(picks) > 0 && maxBytes > 0 && total+size > maxBytes {
			return true
		}
		return false
	}
	stop := false
	add := func(p kestrel.Priority, i int) {
		e := &s.lanes[p].ents[i]
		if full(int(e.size)) {
			stop = true
			return
		}
		picks = append(picks, pick{uint8(p), i})
		total += int(e.size)
	}
	liveFrom := s.mono() - int64(s.opts.LiveWindow)
	// Emergency, then high: oldest first.
	for _, p := range []kestrel.Priority{kestrel.PriorityEmergency, kestrel.PriorityHigh} {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents) && !stop; i++ {
			if l.ents[i].st == stQueued {
				add(p, i)
			}
		}
	}
	if urgentOnly {
		stop = true
	}
	// Live normal, then live bulk: newest first.
	for _, p := range []kestrel.Priority{kestrel.PriorityNormal, kestrel.PriorityBulk} {
		l := &s.lanes[p]
		for i := len(l.ents) - 1; i >= l.head && !stop && l.ents[i].at > 0 && l.ents[i].at > liveFrom; i-- {
			if l.ents[i].st == stQueued {
				add(p, i)
			}
		}
	}
	// Backlog normal, then backlog bulk: oldest first.
	for _, p := range []kestrel.Priority{kestrel.PriorityNormal, kestrel.PriorityBulk} {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents) && !stop && (l.ents[i].at <= 0 || l.ents[i].at <= liveFrom); i++ {
			if l.ents[i].st == stQueued {
				add(p, i)
			}
		}
	}
	buf := make([]byte, 0, total)
	for _, pk := range picks {
		l := &s.lanes[pk.lane]
		e := &l.ents[pk.idx]
		start := len(buf)
		var err error
		if e.where == inStore {
			if r, ok := s.store.(seqReader); ok {
				buf, err = r.ReadSeq(e.seq, e.loc, int(e.size), buf)
			} else {
				buf, err = s.store.Read(e.loc, int(e.size), buf)
			}
		} else {
			buf = append(buf, s.mem.data[e.memOff:e.memOff+e.size]...)
		}
		if err != nil {
			// A record the medium no longer returns intact is lost;
			// count it with recovery's losses rather than stall.
			s.log.Error("spool record unreadable; dropping it", "seq", e.seq, "err", err)
			s.m.RecoveryUnreadable++
			s.kill(l, pk.idx)
			continue
		}
		e.st = stInflight
		l.inflight++
		dst = append(dst, Item{Seq: e.seq, Priority: kestrel.Priority(pk.lane), Time: e.time, Data: buf[start:len(buf):len(buf)]})
	}
	for p := range s.lanes {
		s.lanes[p].tidy()
	}
	s.scratch = picks[:0]
	return dst
}

// locate finds a live entry by seq in any lane: lane index and entry index,
// or -1.
func (s *Spool) locate(seq uint64) (int, int) {
	for p := len(s.lanes) - 1; p >= 0; p-- {
		l := &s.lanes[p]
		if i := l.find(seq); i >= 0 {
			if l.ents[i].st == stDead {
				return p, -1
			}
			return p, i
		}
	}
	return 0, -1
}

// Commit forgets records the broker acknowledged. Unknown seqs (already
// evicted) are ignored. The acknowledgement reaches the medium with the next
// group commit or when its segment is deleted; if a crash comes first the
// records are sent again (a duplicate, never a loss).
func (s *Spool) Commit(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var touched [kestrel.NumPriorities]bool
	for _, q := range seqs {
		p, i := s.locate(q)
		if i < 0 {
			continue
		}
		s.kill(&s.lanes[p], i)
		touched[p] = true
	}
	for p, t := range touched {
		if t {
			s.lanes[p].tidy()
		}
	}
	return nil
}

// Release puts records taken but not acknowledged back in the queue, in
// their original place.
func (s *Spool) Release(seqs []uint64) {
	s.mu.Lock()
	n := 0
	for _, q := range seqs {
		p, i := s.locate(q)
		if i < 0 || s.lanes[p].ents[i].st != stInflight {
			continue
		}
		l := &s.lanes[p]
		l.ents[i].st = stQueued
		l.inflight--
		n++
	}
	s.mu.Unlock()
	if n > 0 {
		s.signal()
	}
}

func (s *Spool) setHealth(err error) {
	s.mu.Lock()
	s.setHealthLocked(err)
	s.mu.Unlock()
}

func (s *Spool) setHealthLocked(err error) {
	if err == nil {
		err = s.degraded
	}
	st := HealthOK
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		st = HealthFull
	case errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		st = HealthReadOnly
	default:
		st = HealthFailing
	}
	if st != s.health.State {
		s.health.Since = s.opts.Now()
		if st == HealthOK {
			s.log.Info("spool storage healthy again", "was", s.health.State.String())
		} else {
			s.log.Error("spool storage problem", "state", st.String(), "err", err)
		}
	}
	s.health.State, s.health.Err = st, err
}

// Health reports the storage condition.
func (s *Spool) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// Metrics returns a snapshot.
func (s *Spool) Metrics() Metrics {
	s.mu.Lock()
	m := s.m
	m.RecoveryLost = slices.Clone(m.RecoveryLost)
	m.Boot = s.boot
	m.Bytes, m.MaxBytes, m.EmergencyBytes = s.bytes, s.opts.MaxBytes, s.opts.EmergencyBytes
	m.MemoryBytes = int64(len(s.mem.data)) - s.memDead
	m.Health = s.health
	oldest, any := int64(0), false
	for p := range s.lanes {
		l := &s.lanes[p]
		m.Lanes[p].Records, m.Lanes[p].Bytes, m.Lanes[p].InFlight = l.live, l.bytes, l.inflight
		m.Records += l.live
		for i := l.head; i < len(l.ents); i++ {
			if l.ents[i].st != stDead {
				if !any || l.ents[i].at < oldest {
					oldest, any = l.ents[i].at, true
				}
				break
			}
		}
	}
	if any {
		if oldest > 0 {
			oldest-- // appended entries are stamped mono()+1, to tell them from recovered ones
		}
		m.OldestAge = max(0, time.Duration(s.mono()-oldest))
	}
	s.mu.Unlock()
	m.StoreBytes = s.store.Usage()
	m.Writes = writesOf(s.store)
	m.Sealing = sealingOf(s.store)
	return m
}

func sealingOf(st Store) string {
	ss, ok := st.(*SealedStore)
	switch {
	case !ok || !ss.write:
		return "off"
	case ss.FIPSOnly():
		return "aes-256-gcm-fips140-only"
	}
	return "aes-256-gcm"
}

// writesOf names the store's write path for logs and the state message:
// "page-cache" on a filesystem without direct I/O means about eight times
// the flash writes at a trickle (docs/spool.md).
func writesOf(st Store) string {
	ls, ok := baseStore(st).(*LogStore)
	switch {
	case !ok:
		return "memory"
	case ls.DirectIO():
		return "direct"
	}
	return "page-cache"
}

func (s *Spool) run(ctx context.Context) {
	defer s.wg.Done()
	s.mu.Lock()
	every := s.opts.SyncInterval
	s.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	s.loopDone.Store(time.Now().UnixNano())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expire()
		case <-s.kick:
		case <-s.relimit:
			s.mu.Lock()
			if d := s.opts.SyncInterval; d != every {
				every = d
				t.Reset(d)
			}
			s.mu.Unlock()
			s.expire()
		}
		s.syncOnce()
		s.loopDone.Store(time.Now().UnixNano())
	}
}

// CommitLoopAge is how long ago the group-commit loop last finished a
// round (it runs every SyncInterval). A loop stuck in the medium (a hung
// fsync, a frozen filesystem) shows here as an age that keeps growing: the
// agent's watchdog withholds its systemd ping then.
func (s *Spool) CommitLoopAge() time.Duration {
	return time.Since(time.Unix(0, s.loopDone.Load()))
}

// ErrNeedsRestart is wrapped by SetLimits for a value that cannot take
// effect on a running spool.
var ErrNeedsRestart = errors.New("spool: needs a restart")

// SetLimits applies spool.max_bytes, spool.max_age and spool.sync_interval
// to the running spool, all or none: a smaller maxBytes evicts by policy at
// once (never emergency), a smaller maxAge at once, a new syncInterval from
// the next tick. Zero takes the default (maxAge 0: no age bound); negative
// values are refused. The log's segment size is fixed at Open: a maxBytes
// under four segments of it would let whole segments dominate the bound, so
// it is refused with an error wrapping ErrNeedsRestart (Open sizes segments
// from maxBytes). Nothing is changed when it returns an error.
func (s *Spool) SetLimits(maxBytes int64, maxAge, syncInterval time.Duration) error {
	if maxBytes < 0 || maxAge < 0 || syncInterval < 0 {
		return fmt.Errorf("spool: limits must not be negative (max_bytes %d, max_age %v, sync_interval %v)", maxBytes, maxAge, syncInterval)
	}
	next := Options{MaxBytes: maxBytes, MaxAge: maxAge, SyncInterval: syncInterval}
	next.fill()
	if ls, ok := baseStore(s.store).(*LogStore); ok && next.MaxBytes < 4*ls.segBytes {
		return fmt.Errorf("spool: max_bytes %d is under four segments of %d bytes, the size chosen at open: %w",
			next.MaxBytes, ls.segBytes, ErrNeedsRestart)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.emergencyDefault {
		next.EmergencyBytes = next.MaxBytes / 16
	} else {
		next.EmergencyBytes = min(s.opts.EmergencyBytes, next.MaxBytes)
	}
	s.opts.MaxBytes, s.opts.EmergencyBytes = next.MaxBytes, next.EmergencyBytes
	s.opts.MaxAge, s.opts.SyncInterval = next.MaxAge, next.SyncInterval
	if over := s.bytes - s.laneCharge(kestrel.PriorityEmergency) - (s.opts.MaxBytes - s.opts.EmergencyBytes); over > 0 {
		s.evict(over, kestrel.PriorityHigh, false)
	}
	if ls, ok := baseStore(s.store).(*LogStore); ok {
		ls.setPoolMax(poolSize(s.opts.MaxBytes, ls.segBytes))
		o := s.opts
		ls.setAging(s.mono, o.span(), nil)
	}
	s.mu.Unlock()
	select {
	case s.relimit <- struct{}{}:
	default:
	}
	s.expire()
	return nil
}

// poolSize is how many drained segment files the log keeps for reuse: up
// to maxBytes worth, at least 2.
func poolSize(maxBytes, segBytes int64) int {
	return int(min(max(maxBytes/segBytes, 2), 4096))
}

// expire evicts records older than MaxAge (never emergency). Age is the
// time since append on the monotonic clock (recoveredAt for records found
// at Open), never the record's wall-clock time: a clock step evicts
// nothing. Append times never decrease along a lane, so the scan stops at
// the first record young enough.
func (s *Spool) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxAge <= 0 {
		return
	}
	cut := s.mono() - int64(s.opts.MaxAge)
	for p := kestrel.PriorityBulk; p < kestrel.PriorityEmergency; p++ {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents); i++ {
			e := &l.ents[i]
			if e.st == stDead {
				continue
			}
			if e.at > cut {
				break
			}
			s.countEviction(p, e, evictedByAge)
			s.kill(l, i)
		}
		l.tidy()
	}
	// Retention on the medium: a segment begun before the cut holds
	// records older than MaxAge, delivered ones among them, which stay
	// readable until it drains. Its other records go with it, by the same
	// policy and count, when they are younger by at most the segment span
	// (all of them, when the segment was sealed by age); a younger one (a
	// segment that spans a suspend, whose wall clock ran on) keeps it.
	ls, ok := baseStore(s.store).(*LogStore)
	if !ok {
		return
	}
	old := ls.agedOut(cut)
	if len(old) == 0 {
		return
	}
	early := cut + int64(s.opts.span())
	for p := kestrel.PriorityBulk; p < kestrel.PriorityEmergency; p++ {
		l := &s.lanes[p]
		for i := l.head; i < len(l.ents); i++ {
			e := &l.ents[i]
			if e.at > early {
				break // append times never decrease along a lane
			}
			if e.st == stDead || e.where != inStore || !old[uint32(e.loc>>32)] {
				continue
			}
			s.countEviction(p, e, evictedByAge)
			s.kill(l, i)
		}
		l.tidy()
	}
}

// syncOnce is one group commit: the records still unacknowledged go to the
// store, which makes them durable; records already acknowledged are never
// written. On a full medium it evicts by policy until the store can free
// enough (the log frees whole segments) and retries; when nothing written
// can be evicted to make room (the backlog waiting in memory is larger than
// the free space) it writes what fits, in priority order (emergency first),
// halving the group until a write succeeds. It never waits for the whole
// backlog to fit: that was a livelock in which nothing, emergencies
// included, was written.
func (s *Spool) syncOnce() {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	s.fullRound = false
	s.mu.Unlock()
	var err error
	defer func() {
		if err != nil {
			s.failCarried(err)
		}
		s.logEvictions()
	}()
	limit := int64(-1) // bytes per group; -1: everything
	evictions := 0
	for attempt := 0; attempt < 24; attempt++ {
		var need int64
		err, need, _ = s.commitGroup(limit)
		if err == nil || !errors.Is(err, syscall.ENOSPC) {
			// A part that fitted ends this group commit: what is left
			// waits in memory (bounded by MemBytes) for the next, rather
			// than fill the medium and force evictions now.
			return
		}
		s.mu.Lock()
		s.fullRound = true // a later part that fits does not make the medium healthy
		s.mu.Unlock()
		if eb := s.emergencyWaiting(); eb > 0 {
			if r, ok := baseStore(s.store).(reserver); ok && r.ReleaseReserve() {
				s.log.Warn("spool medium full: released the emergency reserve")
				continue
			}
			if limit < 0 || limit > eb {
				limit = eb // the emergencies alone first (they come first in a group)
				continue
			}
		}
		// Evict in small steps (bulk, then normal, then high, oldest
		// first; never emergency) and stop as soon as enough is
		// reclaimable: evicting more than the medium needs would throw
		// data away for nothing. At most three rounds, as before.
		freed := int64(0)
		if evictions < 3 {
			evictions++
			s.mu.Lock()
			for s.reclaimable(freed) < need {
				n := s.evictForSpace(max(need/4, 1))
				if n == 0 {
					break
				}
				freed += n
			}
			s.mu.Unlock()
		}
		if freed > 0 {
			continue
		}
		// Nothing written can be evicted to make room: write what fits
		// (the group halved until a write succeeds).
		if need <= 1 {
			return
		}
		limit = need / 2
	}
}

// roomChecker is a Store that can tell whether its medium has room again.
type roomChecker interface {
	Crowded() (crowded, known bool)
}

// stillFull reports whether a medium that ran full is still short of
// room: by its free space where the store can tell (two segments and the
// reserve), else by usage still over 90% of what it was when it filled.
func (s *Spool) stillFull() bool {
	if r, ok := baseStore(s.store).(roomChecker); ok {
		if crowded, known := r.Crowded(); known {
			return crowded
		}
	}
	return s.store.Usage() > s.fullAt*9/10
}

// failCarried closes the Tickets of groups not wholly written with err.
func (s *Spool) failCarried(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range append(s.carry, s.carryE...) {
		g.err = fmt.Errorf("spool: not durable: %w", err)
		close(g.done)
	}
	s.carry, s.carryE = s.carry[:0], s.carryE[:0]
}

// reserver is a Store that keeps space on its medium for emergency records.
type reserver interface {
	ReleaseReserve() bool // frees the reserve; false if there is none
	RestoreReserve()      // takes it again, best effort
}

// emergencyWaiting is what the emergency records waiting in memory cost
// in a group (0: none).
func (s *Spool) emergencyWaiting() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.lanes[kestrel.PriorityEmergency]
	var n int64
	for i := l.head; i < len(l.ents); i++ {
		if l.ents[i].st != stDead && l.ents[i].where == inMem {
			n += int64(l.ents[i].size) + recOverhead
		}
	}
	return n
}

// reclaimer is a Store that can tell how much space its next Sync frees.
type reclaimer interface{ Reclaimable() int64 }

func (s *Spool) reclaimable(evicted int64) int64 {
	if r, ok := baseStore(s.store).(reclaimer); ok {
		return r.Reclaimable()
	}
	return evicted
}

// commitGroup writes the records held in memory, at most limit bytes of
// them (limit < 0: all): emergency first, then the rest oldest first. It returns the bytes it tried and whether records were
// left out.
func (s *Spool) commitGroup(limit int64) (error, int64, bool) {
	s.mu.Lock()
	cut, cutBytes := len(s.mem.refs), len(s.mem.data)
	var need int64
	left, eLeft := false, false
	it := &s.syncItem
	// Emergency records first, then the others in append order (oldest
	// first), which keeps the log's segments in seq order as they were.
	for _, urgent := range []bool{true, false} {
		for _, r := range s.mem.refs {
			if (kestrel.Priority(r.lane) == kestrel.PriorityEmergency) != urgent {
				continue
			}
			p := kestrel.Priority(r.lane)
			l := &s.lanes[r.lane]
			i := l.find(r.seq)
			if i < 0 || l.ents[i].st == stDead || l.ents[i].where != inMem {
				continue
			}
			e := &l.ents[i]
			cost := int64(e.size) + recOverhead
			if limit >= 0 && need > 0 && need+cost > limit {
				left = true
				eLeft = eLeft || p == kestrel.PriorityEmergency
				continue
			}
			*it = Item{Seq: e.seq, Priority: kestrel.Priority(r.lane), Time: e.time, Data: s.mem.data[e.memOff : e.memOff+e.size]}
			loc, err := s.store.Append(it)
			if err != nil {
				// Only a record the store can never take fails here
				// (too large); holding it would block every later sync.
				s.log.Error("spool cannot store record; dropping it", "seq", e.seq, "err", err)
				s.kill(l, i)
				continue
			}
			e.loc, e.where = loc, inWriting
			need += cost
		}
	}
	g, ge := s.group, s.egroup
	s.group, s.egroup = newGroup(), newGroup()
	s.mu.Unlock()

	err := s.store.Sync()

	s.mu.Lock()
	defer s.mu.Unlock()
	var tidy [kestrel.NumPriorities]bool
	for _, r := range s.mem.refs[:cut] {
		l := &s.lanes[r.lane]
		i := l.find(r.seq)
		if i < 0 || l.ents[i].where != inWriting {
			continue
		}
		e := &l.ents[i]
		switch {
		case err != nil:
			e.where = inMem
		case e.st == stDead:
			e.where = inStore
			s.store.Drop(e.seq, e.loc)
			tidy[r.lane] = true
		default:
			e.where = inStore
		}
	}
	for p, t := range tidy {
		if t {
			s.lanes[p].tidy()
		}
	}
	if err != nil {
		s.m.SyncErrors++
		s.setHealthLocked(err)
		if s.health.State == HealthFull {
			s.fullAt = s.store.Usage()
		}
		// The Tickets wait for the retries of this group commit
		// (syncOnce), which close them with the error if it gives up.
		s.carry = append(s.carry, g)
		s.carryE = append(s.carryE, ge)
		if s.memDead > int64(len(s.mem.data))/2 {
			s.compactMem(0, 0)
		}
		return err, need, left
	}
	s.m.Syncs++
	switch {
	case s.health.State == HealthOK:
	case s.health.State == HealthFull && (s.fullRound || s.stillFull()):
		// Still at the edge of the medium, evicting to keep going: stay
		// "full" rather than flap with every group commit.
	default:
		s.setHealthLocked(nil)
		if r, ok := baseStore(s.store).(reserver); ok {
			r.RestoreReserve()
		}
	}
	// A group whose records were not all written stays open (carried)
	// until a group commit writes everything that waits, or fails.
	if eLeft {
		s.carryE = append(s.carryE, ge)
	} else {
		close(ge.done)
		for _, c := range s.carryE {
			close(c.done)
		}
		s.carryE = s.carryE[:0]
	}
	if left {
		s.carry = append(s.carry, g)
		cut, cutBytes = 0, 0 // records were left in memory: keep their refs
	} else {
		close(g.done)
		for _, c := range s.carry {
			close(c.done)
		}
		s.carry = s.carry[:0]
	}
	s.compactMem(cut, cutBytes)
	return nil, need, left
}

// compactMem forgets the first cut refs (their records are now on the
// medium, or dead) and moves the payloads of live in-memory records to a new
// buffer (a Take may still hold slices of none of it: Take copies).
func (s *Spool) compactMem(cut, cutBytes int) {
	refs := s.mem.refs[:0]
	var data []byte
	if cut == len(s.mem.refs) {
		s.mem.refs, s.mem.data, s.memDead = s.mem.refs[:0], s.mem.data[:0], 0
		return
	}
	data = make([]byte, 0, len(s.mem.data)-cutBytes)
	for _, r := range s.mem.refs[cut:] {
		l := &s.lanes[r.lane]
		i := l.find(r.seq)
		if i < 0 || l.ents[i].st == stDead || l.ents[i].where != inMem {
			continue
		}
		e := &l.ents[i]
		off := len(data)
		data = append(data, s.mem.data[e.memOff:e.memOff+e.size]...)
		e.memOff = uint32(off)
		refs = append(refs, r)
	}
	s.mem.refs, s.mem.data, s.memDead = refs, data, 0
}

// Close syncs, persists the exact sequence high-water mark and closes the
// store. Safe twice.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	s.closed = true // no more appends: the last group commit takes everything
	s.mu.Unlock()
	s.syncOnce()
	s.mu.Lock()
	carried := append(s.carry, s.carryE...)
	for _, g := range carried {
		g.err = errors.New("spool: not durable: closed with records the full medium could not take")
	}
	for _, g := range append(carried, s.group, s.egroup) {
		select {
		case <-g.done:
		default:
			close(g.done)
		}
	}
	s.carry, s.carryE = nil, nil
	s.mu.Unlock()
	s.seqMu.Lock()
	merr := s.store.SaveMeta(Meta{Boot: s.boot, NextSeq: s.next})
	s.seqMu.Unlock()
	err := s.store.Close()
	return errors.Join(err, merr)
}

// seqReader is a Store that reads a record by its seq as well as its
// location (SealedStore: the seq authenticates the payload).
type seqReader interface {
	ReadSeq(seq uint64, at Loc, size int, dst []byte) ([]byte, error)
}

// baseStore is the store under any wrappers (SealedStore), whose optional
// interfaces (reserve, room, reclaim) the Spool uses.
func baseStore(st Store) Store {
	for {
		w, ok := st.(interface{ unwrap() Store })
		if !ok {
			return st
		}
		st = w.unwrap()
	}
}
