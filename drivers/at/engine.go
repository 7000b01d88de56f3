package at

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/drivers/internal/lograte"
)

// Sentinel errors callers branch on.
var (
	// ErrTimeout: no final result code within the command's timeout.
	ErrTimeout = errors.New("at: command timed out")
	// ErrError: the modem answered ERROR.
	ErrError = errors.New("at: modem answered ERROR")
	// ErrClosed: the engine's reader has stopped (context done or port lost).
	ErrClosed = errors.New("at: engine stopped")
	// ErrFinal: the modem answered another final result code (NO CARRIER,
	// BUSY, ...); the Response holds it.
	ErrFinal = errors.New("at: unexpected final result code")
	// ErrTooManyLines: the response ran past MaxResponseLines; the
	// Response holds the first MaxResponseLines, the rest was discarded.
	ErrTooManyLines = errors.New("at: response over the line limit")
)

// MaxResponseLines bounds the information lines kept for one command: a
// full AT+COPS=? or AT+CPBR listing fits, a modem that runs away does not.
const MaxResponseLines = 256

// CMEError is a +CME ERROR final result code (3GPP TS 27.007 section 9.2).
// Code is -1 when the modem reported text (AT+CMEE=2).
type CMEError struct {
	Code int
	Text string
}

func (e *CMEError) Error() string {
	if e.Code >= 0 {
		return "at: +CME ERROR " + strconv.Itoa(e.Code)
	}
	return "at: +CME ERROR " + e.Text
}

// CMSError is a +CMS ERROR final result code (3GPP TS 27.005 section 3.2.5).
type CMSError struct {
	Code int
	Text string
}

func (e *CMSError) Error() string {
	if e.Code >= 0 {
		return "at: +CMS ERROR " + strconv.Itoa(e.Code)
	}
	return "at: +CMS ERROR " + e.Text
}

// Response is what a command got back.
type Response struct {
	// Lines are the information responses, in order, without echo or URCs.
	Lines []string
	// Final is the final result code as sent ("OK", "+CME ERROR: 10").
	Final string
}

// URC is an unsolicited result code.
type URC struct {
	Line   string
	Prefix string // "+CREG"; empty for text URCs such as RING
	Params string // text after the colon
	// Data holds the lines that belong to the URC (Options.URCDataLines),
	// e.g. the user data line after +CTSDSR.
	Data []string
	Time time.Time
}

// EventType is a change in the modem's health.
type EventType uint8

const (
	// EventSilent: Options.SilentAfter commands in a row timed out.
	EventSilent EventType = iota + 1
	// EventReboot: a boot banner arrived, or echo came back after ATE0.
	EventReboot
	// EventReinit: Options.Init was replayed after a reboot or silence.
	// Err holds what failed, if anything.
	EventReinit
)

var eventTypeNames = map[EventType]string{EventSilent: "silent", EventReboot: "reboot", EventReinit: "reinit"}

func (t EventType) String() string {
	if n, ok := eventTypeNames[t]; ok {
		return n
	}
	return "event(" + strconv.Itoa(int(t)) + ")"
}

// Event reports a change in the modem's health.
type Event struct {
	Type   EventType
	Reason string
	Err    error
	Time   time.Time
}

// Options configure an Engine. The zero value works.
type Options struct {
	Logger *slog.Logger
	// DefaultTimeout applies when Command is given 0. Default 5 s.
	DefaultTimeout time.Duration
	// URCPrefixes name the unsolicited result codes: "+CREG", "RING".
	// A line with one of these prefixes is a URC unless it carries the
	// prefix of the command in flight.
	URCPrefixes []string
	// URCDataLines says how many lines after a URC belong to it, by
	// prefix: {"+CTSDSR": 1, "+CMT": 1}.
	URCDataLines map[string]int
	// Init are the commands that set the modem up (ATE0, AT+CMEE=1, URC
	// enables). Init runs them; the engine replays them after a reboot or
	// a silence.
	Init []string
	// BootBanners are lines a modem prints when it starts: "RDY",
	// "^SYSSTART", "+PBREADY". Seeing one means it rebooted.
	BootBanners []string
	// SilentAfter is how many timeouts in a row mark the modem silent.
	// Default 3.
	SilentAfter int
	// Now is the clock for URC and event times. Default time.Now.
	Now func() time.Time
	// URCBuffer is the capacity of the URC and event channels. Default 64.
	URCBuffer int
	// ResyncQuiet is how long the line must stay quiet after a timeout
	// before the next command is sent, unless the late final result code
	// arrives first. Without it a late "OK" would answer the next command.
	// Default 200 ms.
	ResyncQuiet time.Duration
}

// maxLine bounds one line: longer input is noise or a runaway modem.
const maxLine = 4096

type call struct {
	cmd    string
	prefix string
	lines  []string
	done   chan result
	// owedAtStart and ateLate let a timeout tell a late reply that came
	// from one that never will (the modem dropped the command).
	owedAtStart int
	ateLate     bool
	echoSeen    bool
	// discarded counts lines past MaxResponseLines.
	discarded int
}

// add keeps an information line of the call's response, up to
// MaxResponseLines.
func (c *call) add(text string) {
	if len(c.lines) >= MaxResponseLines {
		c.discarded++
		return
	}
	c.lines = append(c.lines, text)
}

type result struct {
	final Line
	raw   string
	err   error
}

// Engine runs AT commands over one port. Create it with NewEngine, start
// Run in a goroutine, then call Command from any goroutine.
type Engine struct {
	rw   io.ReadWriter
	opts Options
	log  *slog.Logger

	queue chan struct{} // a one-slot semaphore: commands run one at a time

	urcs   chan URC
	events chan Event

	mu       sync.Mutex
	pending  *call
	lastCmd  string // for late echo after a timeout
	stalePfx string // prefix of a timed-out command whose reply may still come
	staleCmd string // and the command itself, for its late echo
	// owed counts final result codes still due from abandoned commands.
	// The modem answers in order, so the next final code (before the new
	// command's echo) is the late one, not the new command's.
	owed       int
	staleAt    time.Time // when a command was last abandoned
	lastRx     time.Time // when the last byte arrived
	urc        *URC      // a URC still collecting its data lines
	urcWant    int
	echoOff    bool // ATE0 succeeded: echo now means the modem lost its settings
	timeouts   int
	silent     bool
	reiniting  bool
	running    bool
	closed     bool
	runCtx     context.Context
	dropped    uint64
	wg         sync.WaitGroup
	linebuf    []byte
	discarding bool
	// Warnings that the modem's output can repeat at line rate.
	longLines, urcDrops lograte.Limiter
}

// hexPrefix shows the first bytes of a line that is not logged whole.
func hexPrefix(b []byte) string { return hex.EncodeToString(b[:min(len(b), 16)]) }

// NewEngine wraps an open port. The engine does not close it.
func NewEngine(rw io.ReadWriter, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 5 * time.Second
	}
	if opts.SilentAfter <= 0 {
		opts.SilentAfter = 3
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.URCBuffer <= 0 {
		opts.URCBuffer = 64
	}
	if opts.ResyncQuiet <= 0 {
		opts.ResyncQuiet = 200 * time.Millisecond
	}
	prefixes := make([]string, len(opts.URCPrefixes))
	for i, p := range opts.URCPrefixes {
		prefixes[i] = strings.TrimSuffix(p, ":")
	}
	opts.URCPrefixes = prefixes
	return &Engine{
		rw:      rw,
		opts:    opts,
		log:     opts.Logger,
		queue:   make(chan struct{}, 1),
		urcs:    make(chan URC, opts.URCBuffer),
		events:  make(chan Event, opts.URCBuffer),
		linebuf: make([]byte, 0, 256),
	}
}

// URCs delivers unsolicited result codes. It is closed when Run returns.
// If nobody reads and the buffer fills, URCs are dropped and counted
// rather than stalling the responses of commands.
func (e *Engine) URCs() <-chan URC { return e.urcs }

// Events delivers health changes: silent, reboot, reinit. Closed when Run
// returns.
func (e *Engine) Events() <-chan Event { return e.events }

// Silent reports whether the modem is currently marked silent.
func (e *Engine) Silent() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.silent
}

// Dropped counts URCs lost to a full buffer.
func (e *Engine) Dropped() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dropped
}

type deadliner interface {
	SetReadDeadline(time.Time) error
}

// readTimeouter is go.bug.st/serial's Port: Read returns 0, nil when the
// timeout passes.
type readTimeouter interface {
	SetReadTimeout(time.Duration) error
}

// Run is the reader loop. It returns when ctx is done or the port fails.
// It notices ctx ending at once on a port with SetReadDeadline (an
// *os.File on a tty) and within 100 ms on one with SetReadTimeout
// (go.bug.st/serial); with neither, the owner must close the port to
// release the pending read. Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running || e.closed {
		e.mu.Unlock()
		return errors.New("at: Run called twice")
	}
	e.running = true
	e.runCtx = ctx
	e.mu.Unlock()

	if d, ok := e.rw.(deadliner); ok {
		_ = d.SetReadDeadline(time.Time{})
		stop := context.AfterFunc(ctx, func() { _ = d.SetReadDeadline(time.Now()) })
		defer stop()
	} else if rt, ok := e.rw.(readTimeouter); ok {
		if err := rt.SetReadTimeout(100 * time.Millisecond); err != nil {
			e.log.Warn("cannot set a read timeout: stopping needs the port closed", "err", err)
		}
	}
	buf := make([]byte, 1024)
	var err error
	for {
		n, rerr := e.rw.Read(buf)
		if n > 0 {
			e.feed(buf[:n])
		}
		if rerr != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			} else {
				err = fmt.Errorf("at: read: %w", rerr)
			}
			break
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
	}
	e.mu.Lock()
	e.closed = true
	if c := e.pending; c != nil {
		e.pending = nil
		c.done <- result{err: ErrClosed}
	}
	e.mu.Unlock()
	e.wg.Wait()
	close(e.urcs)
	close(e.events)
	return err
}

// feed splits bytes into lines. CR and LF both end a line, so an echo
// ("AT+CSQ\r") and a response ("\r\n+CSQ: 20,99\r\n") split the same way.
func (e *Engine) feed(b []byte) {
	e.mu.Lock()
	e.lastRx = time.Now()
	e.mu.Unlock()
	for _, c := range b {
		if c == '\r' || c == '\n' {
			if !e.discarding && len(e.linebuf) > 0 {
				e.handleLine(string(e.linebuf))
			}
			e.linebuf = e.linebuf[:0]
			e.discarding = false
			continue
		}
		if e.discarding {
			continue
		}
		if len(e.linebuf) >= maxLine {
			if total, skipped, ok := e.longLines.Note(e.opts.Now()); ok {
				e.log.Warn("modem line too long, discarded", "limit", maxLine, "prefix", hexPrefix(e.linebuf), "count", total, "not_logged", skipped)
			}
			e.linebuf = e.linebuf[:0]
			e.discarding = true
			continue
		}
		e.linebuf = append(e.linebuf, c)
	}
}

func (e *Engine) handleLine(raw string) {
	l := ParseLine(raw)
	if l.Kind == LineEmpty {
		return
	}
	text := strings.TrimSpace(raw)
	now := e.opts.Now()

	e.mu.Lock()
	defer e.mu.Unlock()

	// Data lines of a multi-line URC belong to it whatever they look like,
	// except a final result code for the command in flight: then the
	// radio dropped the body, and the command must not starve for it.
	if e.urc != nil {
		if !(l.Final() && e.pending != nil) {
			e.urc.Data = append(e.urc.Data, text)
			e.urcWant--
			if e.urcWant <= 0 {
				e.deliverURC(*e.urc)
				e.urc = nil
			}
			return
		}
		e.log.Warn("URC body missing", "urc", e.urc.Line)
		e.deliverURC(*e.urc)
		e.urc = nil
	}

	if e.isBanner(text) {
		e.log.Warn("modem boot banner: it rebooted", "line", text)
		e.rebootLocked("boot banner " + strconv.Quote(text))
		return
	}

	c := e.pending
	if c != nil {
		if strings.EqualFold(text, c.cmd) && len(c.lines) == 0 && !c.echoSeen {
			// Everything after the echo answers this command.
			c.echoSeen = true
			e.owed = 0
			if e.echoOff {
				e.log.Warn("echo returned after ATE0: the modem lost its settings", "cmd", c.cmd)
				e.echoOff = false
				e.rebootLocked("echo returned after ATE0")
			}
			return
		}
		if e.owed > 0 && !c.echoSeen && strings.EqualFold(text, e.staleCmd) {
			return // late echo of the abandoned command
		}
		if l.Final() {
			if e.owed > 0 && !c.echoSeen {
				// The late answer of an abandoned command, and the
				// lines before it were its too.
				e.owed--
				c.ateLate = true
				c.lines, c.discarded = c.lines[:0], 0
				e.log.Debug("late final result code of an abandoned command dropped", "line", text, "pending", c.cmd)
				return
			}
			e.pending = nil
			e.lastCmd = ""
			c.done <- result{final: l, raw: text}
			return
		}
		if l.Kind == LineInfo && c.prefix != "" && strings.EqualFold(l.Prefix, c.prefix) {
			c.add(text)
			return
		}
		if e.isURC(text, l) {
			e.startURC(text, l, now)
			return
		}
		c.add(text)
		return
	}

	// No command in flight.
	if e.lastCmd != "" && strings.EqualFold(text, e.lastCmd) {
		return // late echo of a command that timed out
	}
	if e.owed > 0 {
		if l.Final() {
			e.owed--
			return
		}
		if l.Kind != LineInfo || (e.stalePfx != "" && strings.EqualFold(l.Prefix, e.stalePfx)) {
			e.log.Debug("late response line dropped", "line", text)
			return
		}
	}
	if l.Final() {
		e.log.Debug("final result code with no command in flight", "line", text)
		return
	}
	// Anything else unsolicited is passed on: the consumer decides.
	e.startURC(text, l, now)
}

func (e *Engine) isBanner(text string) bool {
	for _, b := range e.opts.BootBanners {
		if strings.EqualFold(text, b) || (strings.HasPrefix(b, "+") || strings.HasPrefix(b, "^")) && strings.HasPrefix(text, b) {
			return true
		}
	}
	return false
}

func (e *Engine) isURC(text string, l Line) bool {
	for _, p := range e.opts.URCPrefixes {
		if l.Kind == LineInfo && strings.EqualFold(l.Prefix, p) {
			return true
		}
		if l.Kind == LineText && strings.HasPrefix(text, p) {
			return true
		}
	}
	return false
}

func (e *Engine) startURC(text string, l Line, now time.Time) {
	u := URC{Line: text, Time: now}
	if l.Kind == LineInfo {
		u.Prefix, u.Params = l.Prefix, l.Params
	}
	if n := e.opts.URCDataLines[u.Prefix]; n > 0 && u.Prefix != "" {
		e.urc = &u
		e.urcWant = n
		return
	}
	e.deliverURC(u)
}

func (e *Engine) deliverURC(u URC) {
	select {
	case e.urcs <- u:
	default:
		e.dropped++
		if _, skipped, ok := e.urcDrops.Note(e.opts.Now()); ok {
			e.log.Warn("URC dropped: consumer too slow", "prefix", u.Prefix, "bytes", len(u.Line), "dropped", e.dropped, "not_logged", skipped)
		}
	}
}

func (e *Engine) sendEvent(ev Event) {
	select {
	case e.events <- ev:
	default:
		e.log.Warn("modem event dropped: consumer too slow", "event", ev.Type.String())
	}
}

// rebootLocked reports a reboot and starts re-initialisation. e.mu held.
func (e *Engine) rebootLocked(reason string) {
	e.echoOff = false
	e.sendEvent(Event{Type: EventReboot, Reason: reason, Time: e.opts.Now()})
	e.reinitLocked(reason)
}

func (e *Engine) reinitLocked(reason string) {
	if e.reiniting || e.closed || e.runCtx == nil {
		return
	}
	e.reiniting = true
	ctx := e.runCtx
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		err := e.Init(ctx)
		e.mu.Lock()
		e.reiniting = false
		if err != nil {
			e.log.Warn("modem re-initialisation failed", "reason", reason, "err", err)
		} else {
			e.log.Info("modem re-initialised", "reason", reason)
		}
		if !e.closed {
			e.sendEvent(Event{Type: EventReinit, Reason: reason, Err: err, Time: e.opts.Now()})
		}
		e.mu.Unlock()
	}()
}

// Init runs Options.Init in order. It goes on past a failing command, so
// that a radio that rejects one optional setting still gets the rest, and
// returns the failures joined.
func (e *Engine) Init(ctx context.Context) error {
	var errs []error
	for _, cmd := range e.opts.Init {
		if _, err := e.Command(ctx, cmd, 0); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cmd, err))
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Command sends cmd (without the trailing CR) and waits for its final
// result code. Commands are serialised: a call waits its turn, and the
// wait counts against ctx, not against timeout. A timeout of 0 means
// Options.DefaultTimeout.
//
// The error is nil for OK, ErrError for ERROR, *CMEError or *CMSError,
// ErrFinal for other final codes, ErrTimeout, ErrClosed, or ctx's error.
func (e *Engine) Command(ctx context.Context, cmd string, timeout time.Duration) (Response, error) {
	if timeout <= 0 {
		timeout = e.opts.DefaultTimeout
	}
	select {
	case e.queue <- struct{}{}:
	case <-ctx.Done():
		return Response{}, ctx.Err()
	}
	defer func() { <-e.queue }()
	if err := e.resync(ctx); err != nil {
		return Response{}, err
	}

	c := &call{cmd: strings.TrimSpace(cmd), prefix: commandPrefix(cmd), done: make(chan result, 1)}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return Response{}, ErrClosed
	}
	e.pending = c
	c.owedAtStart = e.owed
	e.lastCmd = c.cmd
	e.mu.Unlock()

	if _, err := io.WriteString(e.rw, c.cmd+"\r"); err != nil {
		e.mu.Lock()
		if e.pending == c {
			e.pending = nil
		}
		e.mu.Unlock()
		return Response{}, fmt.Errorf("at: write %s: %w", c.cmd, err)
	}

	t := time.NewTimer(timeout)
	defer t.Stop()
	var r result
	select {
	case r = <-c.done:
	case <-t.C:
		r = e.abandon(c, ErrTimeout)
	case <-ctx.Done():
		r = e.abandon(c, ctx.Err())
	}
	if c.discarded > 0 {
		e.log.Warn("modem response over the line limit: rest discarded", "cmd", c.cmd, "limit", MaxResponseLines, "discarded", c.discarded)
		if r.err != nil {
			return Response{Lines: c.lines}, fmt.Errorf("%s: %w (%d more lines discarded), then %w", c.cmd, ErrTooManyLines, c.discarded, r.err)
		}
		e.answered(c)
		return Response{Lines: c.lines, Final: r.raw}, fmt.Errorf("%s: %w (%d more lines discarded before %s)", c.cmd, ErrTooManyLines, c.discarded, r.raw)
	}
	if r.err != nil {
		return Response{Lines: c.lines}, r.err
	}
	e.answered(c)
	resp := Response{Lines: c.lines, Final: r.raw}
	switch r.final.Kind {
	case LineOK:
		return resp, nil
	case LineError:
		return resp, ErrError
	case LineCMEError:
		return resp, &CMEError{Code: r.final.Code, Text: r.final.Params}
	case LineCMSError:
		return resp, &CMSError{Code: r.final.Code, Text: r.final.Params}
	}
	return resp, fmt.Errorf("%w: %s", ErrFinal, r.raw)
}

// abandon gives up on a call. Its reply may still come: one final result
// code is owed, so the reply is neither taken for URCs nor for the next
// command's answer. If this call itself started owing, or ate a late
// final, the count was wrong (the modem dropped a command): start afresh,
// at the cost of at most one extra timeout.
func (e *Engine) abandon(c *call, err error) result {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending != c {
		// The answer won the race.
		return <-c.done
	}
	e.pending = nil
	if c.ateLate || c.owedAtStart > 0 {
		e.owed = 0
	} else {
		e.owed = 1
	}
	e.staleAt = time.Now()
	e.stalePfx = c.prefix
	e.staleCmd = c.cmd
	if errors.Is(err, ErrTimeout) {
		e.timeouts++
		if e.timeouts == e.opts.SilentAfter && !e.silent {
			e.silent = true
			e.log.Warn("modem silent", "timeouts", e.timeouts, "last", c.cmd)
			e.sendEvent(Event{Type: EventSilent, Reason: fmt.Sprintf("%d commands in a row timed out", e.timeouts), Time: e.opts.Now()})
		}
	}
	return result{err: err}
}

// resync waits, after a timeout, until the late reply has come or the
// line has been quiet for Options.ResyncQuiet. The caller holds the queue.
func (e *Engine) resync(ctx context.Context) error {
	for {
		e.mu.Lock()
		stale, since := e.owed > 0, e.staleAt
		if e.lastRx.After(since) {
			since = e.lastRx
		}
		e.mu.Unlock()
		if !stale {
			return nil
		}
		wait := time.Until(since.Add(e.opts.ResyncQuiet))
		if wait <= 0 {
			return nil
		}
		select {
		case <-time.After(min(wait, 20*time.Millisecond)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// answered notes that the modem is alive and tracks echo state.
func (e *Engine) answered(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.timeouts = 0
	up := strings.ToUpper(c.cmd)
	if up == "ATE0" {
		e.echoOff = true
	} else if up == "ATE1" || up == "ATE" || up == "ATZ" || up == "AT&F" {
		e.echoOff = false
	}
	if e.silent {
		e.silent = false
		e.log.Info("modem answers again after silence")
		e.reinitLocked("modem answered again after silence")
	}
}
