package radio

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/at"
	"github.com/kestrel-edge/kestrel/drivers/internal/lograte"
)

// Options configure a Radio. The zero value works.
type Options struct {
	Logger *slog.Logger
	// Poll is how often signal and registration are read. Default 10 s.
	Poll time.Duration
	// Heartbeat is the longest gap between two status records. Default 60 s.
	Heartbeat time.Duration
	// CommandTimeout bounds one AT command. Default 3 s.
	CommandTimeout time.Duration
	// Hysteresis is how far, in dB, RSSI, RSRP or RSRQ must move from the
	// last reported value before a change is reported. Default 3.
	Hysteresis int
	// SilentAfter is how many timeouts in a row mark the radio offline.
	// Default 3.
	SilentAfter int
	// EmergencyStatus are the TETRA pre-coded status values that mean an
	// emergency. Default {0} (EN 300 392-2 clause 14.8.34); forces add
	// their own.
	EmergencyStatus []uint16
	// BootBanners override the lines that mean the modem restarted.
	BootBanners []string
	// Now is the clock for record times. Default time.Now.
	Now func() time.Time
}

// ParseProfile reads the radio.profile config value: "tetra" or "lte".
func ParseProfile(s string) (kestrel.RadioProfile, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tetra":
		return kestrel.ProfileTETRA, nil
	case "lte":
		return kestrel.ProfileLTE, nil
	}
	return 0, fmt.Errorf("radio: unknown profile %q (want tetra or lte)", s)
}

// profile is one AT dialect: what to set up, what to poll, which URCs.
type profile struct {
	init     []string
	urcs     []string
	urcData  map[string]int
	poll     []string // every Poll, less what the modem does not support
	identity []string // at start and after a reset
	// probe are optional set-up commands, sent at start and after a
	// reset: one the modem rejects marks its registration query
	// unsupported until the next reset.
	probe []regCmd
}

var profiles = map[kestrel.RadioProfile]profile{
	kestrel.ProfileTETRA: {
		init: []string{
			"ATE0",
			"AT+CMEE=1",
			"AT+CREG=1",       // registration URC
			"AT+CTSP=1,2,20",  // route status messages to the PEI
			"AT+CTSP=1,3,130", // SDS-TL text messaging (protocol 0x82)
			"AT+CTSP=1,3,137", // immediate text messaging (0x89)
		},
		urcs:     []string{"+CREG", "+CTSDSR", "+CTXD", "+CTICN", "+CTOM", "+CTGS"},
		urcData:  map[string]int{"+CTSDSR": 1},
		poll:     []string{"AT+CSQ?", "AT+CREG?", "AT+CTOM?", "AT+CTGS?"},
		identity: []string{"AT+CNUMF?"},
	},
	kestrel.ProfileLTE: {
		init: []string{
			"ATE0",
			"AT+CMEE=1",
			"AT+CEREG=2",  // URC with TAC and cell identity
			"AT+COPS=3,0", // operator as long alphanumeric
		},
		urcs: []string{"+CEREG", "+C5GREG", "+CGREG", "+CREG"},
		poll: []string{"AT+CSQ", "AT+CESQ",
			"AT+C5GREG?", "AT+CEREG?", "AT+CGREG?", "AT+CREG?", "AT+COPS?"},
		identity: []string{"AT+CGSN", "AT+CCID"},
		// 5G NR modems add +C5GREG; modems without +CEREG (2G/3G, or
		// on a 2G/3G cell) report through +CGREG and +CREG.
		probe: []regCmd{mustRegCmd("+C5GREG"), mustRegCmd("+CGREG"), mustRegCmd("+CREG")},
	},
}

func mustRegCmd(prefix string) regCmd {
	c, ok := regCmdFor(prefix)
	if !ok {
		panic("radio: no registration command " + prefix)
	}
	return c
}

var defaultBanners = []string{"RDY", "^SYSSTART", "+PBREADY", "START"}

// Radio is one radio or modem on one port.
type Radio struct {
	profile kestrel.RadioProfile
	p       profile
	opts    Options
	log     *slog.Logger
	e       *at.Engine
}

// New prepares a radio on an open port; Run drives it. The port is not
// closed by the radio.
func New(rw io.ReadWriter, p kestrel.RadioProfile, opts Options) *Radio {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Poll <= 0 {
		opts.Poll = 10 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 60 * time.Second
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 3 * time.Second
	}
	if opts.Hysteresis <= 0 {
		opts.Hysteresis = 3
	}
	if opts.SilentAfter <= 0 {
		opts.SilentAfter = 3
	}
	if opts.EmergencyStatus == nil {
		opts.EmergencyStatus = []uint16{0}
	}
	if opts.BootBanners == nil {
		opts.BootBanners = defaultBanners
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger.With("driver", "radio", "profile", p.String())
	prof := profiles[p]
	return &Radio{
		profile: p,
		p:       prof,
		opts:    opts,
		log:     log,
		e: at.NewEngine(rw, at.Options{
			Logger:         log,
			DefaultTimeout: opts.CommandTimeout,
			URCPrefixes:    prof.urcs,
			URCDataLines:   prof.urcData,
			Init:           prof.init,
			BootBanners:    opts.BootBanners,
			SilentAfter:    opts.SilentAfter,
			Now:            opts.Now,
		}),
	}
}

// Engine gives access to the AT engine, for commands beyond status (a
// fitter's self-test, sending a status message).
func (r *Radio) Engine() *at.Engine { return r.e }

// update is a batch of poll results, applied at once so one poll makes at
// most one record.
type update func(*loop)

// Run drives the radio until ctx ends (returning nil) or the port fails
// (returning the error). It calls emit from one goroutine only.
func (r *Radio) Run(ctx context.Context, emit func(kestrel.Record)) error {
	if _, ok := profiles[r.profile]; !ok {
		return fmt.Errorf("radio: unknown profile %v", r.profile)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	engineErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		engineErr <- r.e.Run(ctx)
	}()

	updates := make(chan update, 4)
	refresh := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.poller(ctx, updates, refresh)
	}()
	defer wg.Wait()
	defer cancel()

	s := &loop{r: r, emit: emit, cur: kestrel.RadioStatus{Profile: r.profile}, copsAct: -1}
	if r.profile == kestrel.ProfileLTE {
		s.cur.AccessTech = kestrel.AccessTechUnknown
	}
	hb := time.NewTimer(r.opts.Heartbeat)
	defer hb.Stop()
	urcs, events := r.e.URCs(), r.e.Events()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-engineErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("radio: %w", err)
		case u, ok := <-urcs:
			if !ok {
				urcs = nil
				continue
			}
			s.urc(u)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			s.health(ev, refresh)
		case f := <-updates:
			f(s)
			s.cur.Online = true
		case <-hb.C:
			s.send(r.opts.Now())
		}
		if s.changed() {
			s.send(r.opts.Now())
		}
		if s.sent {
			s.sent = false
			hb.Reset(r.opts.Heartbeat)
		}
	}
}

// poller runs the AT queries and hands results to the loop.
func (r *Radio) poller(ctx context.Context, out chan<- update, refresh <-chan struct{}) {
	if err := r.e.Init(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("radio set-up incomplete", "err", err)
	}
	full := true
	unsupported := map[string]bool{}
	t := time.NewTicker(r.opts.Poll)
	defer t.Stop()
	for {
		if r.e.Silent() {
			// One cheap probe; the engine re-initialises when it answers.
			_, _ = r.e.Command(ctx, "AT", r.opts.CommandTimeout)
		} else {
			if full {
				clear(unsupported)
				r.probe(ctx, unsupported)
			}
			var cmds []string
			if full {
				cmds = slices.Clone(r.p.identity)
			}
			for _, c := range r.p.poll {
				if !unsupported[c] {
					cmds = append(cmds, c)
				}
			}
			if f, ok := r.query(ctx, cmds, unsupported); ok {
				full = false
				select {
				case out <- f:
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-refresh:
			full = true
		}
	}
}

// probe sends the optional set-up commands; each one the modem rejects
// marks its query unsupported.
func (r *Radio) probe(ctx context.Context, unsupported map[string]bool) {
	for _, c := range r.p.probe {
		_, err := r.e.Command(ctx, c.enable, r.opts.CommandTimeout)
		if err == nil {
			continue
		}
		if errors.Is(err, at.ErrTimeout) || errors.Is(err, at.ErrClosed) || ctx.Err() != nil {
			return
		}
		r.log.Debug("radio lacks a registration report", "cmd", c.enable, "err", err)
		unsupported[c.query] = true
	}
}

// query runs cmds and folds their answers into one update. It stops at the
// first timeout (a silent radio would otherwise cost one timeout per
// command) and reports ok only if at least one command answered. A
// registration query the modem rejects is marked unsupported, and the
// domain it reported is dropped.
func (r *Radio) query(ctx context.Context, cmds []string, unsupported map[string]bool) (update, bool) {
	var fs []update
	for _, c := range cmds {
		resp, err := r.e.Command(ctx, c, r.opts.CommandTimeout)
		if err != nil {
			if errors.Is(err, at.ErrTimeout) || errors.Is(err, at.ErrClosed) || ctx.Err() != nil {
				break
			}
			r.log.Debug("radio query failed", "cmd", c, "err", err)
			if rc, ok := regQuery(c); ok && r.profile == kestrel.ProfileLTE {
				unsupported[c] = true
				fs = append(fs, func(s *loop) { s.dropReg(rc.src) })
			}
			continue
		}
		if f := r.apply(c, resp.Lines); f != nil {
			fs = append(fs, f)
		}
	}
	if len(fs) == 0 {
		return nil, false
	}
	return func(s *loop) {
		for _, f := range fs {
			f(s)
		}
	}, true
}

func regQuery(cmd string) (regCmd, bool) {
	for _, c := range regCmds {
		if c.query == cmd {
			return c, true
		}
	}
	return regCmd{}, false
}

// rejected is the update for a line that fits no known layout: nothing is
// stored, the line is counted and logged.
func rejected(what, line string, err error) update {
	return func(s *loop) { s.reject(what, line, err) }
}

// apply turns a command's information lines into an update.
func (r *Radio) apply(cmd string, lines []string) update {
	first, line := "", ""
	if len(lines) > 0 {
		line = lines[0]
		first = at.ParseLine(line).Params
	}
	switch cmd {
	case "AT+CSQ?", "AT+CSQ":
		if line == "" {
			return nil
		}
		rssi, ber, err := parseCSQ(first)
		if err != nil {
			return rejected(cmd, line, err)
		}
		return func(s *loop) { s.cur.RSSI, s.cur.BER = rssi, ber }
	case "AT+CESQ":
		if line == "" {
			return nil
		}
		q, p, err := parseCESQ(first)
		if err != nil {
			return rejected(cmd, line, err)
		}
		return func(s *loop) { s.cur.RSRQ, s.cur.RSRP = q, p }
	case "AT+CREG?", "AT+CGREG?", "AT+CEREG?", "AT+C5GREG?":
		if line == "" {
			return nil
		}
		if r.profile == kestrel.ProfileTETRA {
			g, err := parseCREGTetra(first, true)
			if err != nil {
				return rejected(cmd, line, err)
			}
			return func(s *loop) { s.applyTetra(g) }
		}
		return r.applyRegLines(cmd, lines)
	case "AT+CTOM?":
		if m, ok := tetraMode(first); ok {
			return func(s *loop) { s.cur.Mode = m }
		}
	case "AT+CTGS?":
		if g := parseIdentity(lines, "1"); g != "" {
			return func(s *loop) { s.cur.Talkgroup = g }
		}
	case "AT+CNUMF?":
		if id := parseIdentity(lines, ""); id != "" {
			return func(s *loop) { s.cur.Identity = id }
		}
	case "AT+COPS?":
		if line == "" {
			return nil
		}
		c, err := parseCOPS(first)
		if err != nil {
			return rejected(cmd, line, err)
		}
		return func(s *loop) { s.applyCOPS(c) }
	case "AT+CGSN":
		v, found, err := parseIMEI(lines)
		switch {
		case err != nil:
			return rejected(cmd, line, err)
		case found:
			return func(s *loop) { s.cur.IMEI = v }
		}
	case "AT+CCID":
		id, found, err := parseICCID(lines)
		switch {
		case err != nil:
			return rejected(cmd, line, err)
		case found:
			return func(s *loop) { s.cur.ICCID, s.cur.ICCIDInvalid = id.value, id.invalid }
		}
	}
	return nil
}

// applyRegLines reads the answer to a registration query. Its unsolicited
// code may arrive inside the answer and carry the same prefix, so the
// engine passes it with the answer: each line is read as the read
// response, else as the unsolicited form, else refused, in the order the
// modem sent them.
func (r *Radio) applyRegLines(cmd string, lines []string) update {
	rc, _ := regQuery(cmd)
	var fs []update
	for _, ln := range lines {
		l := at.ParseLine(ln)
		if l.Kind != at.LineInfo || l.Prefix != rc.prefix {
			fs = append(fs, rejected(cmd, ln, errLayout))
			continue
		}
		g, err := parseReg(rc, l.Params, true)
		if err != nil {
			g, err = parseReg(rc, l.Params, false)
		}
		if err != nil {
			fs = append(fs, rejected(cmd, ln, err))
			continue
		}
		fs = append(fs, func(s *loop) { s.applyReg(g) })
	}
	return func(s *loop) {
		for _, f := range fs {
			f(s)
		}
	}
}

// loop is the state of Run's goroutine.
type loop struct {
	r        *Radio
	emit     func(kestrel.Record)
	cur      kestrel.RadioStatus
	last     *kestrel.RadioStatus
	sent     bool
	resetWhy string
	// LTE: the last report of each registration domain, by RegSource,
	// and the <AcT> of the last +COPS answer (-1 none).
	regs    [kestrel.RegSourceC5GREG + 1]*reg
	copsAct int
	// Warnings the radio's input can repeat without bound.
	rejects, badSDS lograte.Limiter
}

// reject counts a refused line and logs it, thinned (lograte): a radio can
// send them at line rate. The log shows the line's length and first bytes,
// not the line (up to 4 KiB).
func (s *loop) reject(what, line string, err error) {
	s.cur.RejectedLines++
	if total, skipped, ok := s.rejects.Note(s.r.opts.Now()); ok {
		s.r.log.Warn("radio line refused", "what", what, "bytes", len(line), "prefix", hex.EncodeToString([]byte(line[:min(len(line), 16)])),
			"err", err, "count", total, "not_logged", skipped)
	}
}

func (s *loop) applyTetra(g reg) {
	s.cur.Registered, s.cur.RegSource = g.state, g.src
	if g.hasLoc {
		s.cur.TAC = g.area
	}
	if g.net != "" {
		s.cur.Operator, s.cur.OperatorFormat = g.net, kestrel.OperatorNumeric
	}
}

// applyReg keeps one domain's report and recomputes what the status
// shows. A report without location keeps the domain's last location while
// the radio stays attached (home, roaming, emergency only, RLOS).
func (s *loop) applyReg(g reg) {
	if g.variant != "" {
		s.r.log.Debug("radio registration in a known variant layout", "variant", g.variant)
	}
	attached := g.state.InService() || g.state == kestrel.RegEmergencyOnly || g.state == kestrel.RegRLOS
	if prev := s.regs[g.src]; prev != nil && attached {
		if !g.hasLoc && prev.hasLoc {
			g.area, g.cell, g.hasLoc = prev.area, prev.cell, true
		}
		if g.act < 0 {
			g.act = prev.act
		}
	}
	s.regs[g.src] = &g
	s.consolidate()
}

func (s *loop) dropReg(src kestrel.RegSource) {
	s.regs[src] = nil
	s.consolidate()
}

func (s *loop) applyCOPS(c cops) {
	s.cur.Operator, s.cur.OperatorFormat = c.oper, c.format
	s.copsAct = c.act
	s.consolidate()
}

// consolidate shows the best domain: the highest rank (see rank), and
// on a tie the newer system (5GS, EPS, GPRS, CS).
func (s *loop) consolidate() {
	var best *reg
	for i := len(s.regs) - 1; i >= 0; i-- {
		g := s.regs[i]
		if g != nil && (best == nil || rank(g.state) > rank(best.state)) {
			best = g
		}
	}
	act := s.copsAct
	if best == nil {
		s.cur.Registered, s.cur.RegSource, s.cur.TAC, s.cur.CellID = 0, kestrel.RegSourceNone, 0, 0
	} else {
		s.cur.Registered, s.cur.RegSource = best.state, best.src
		s.cur.TAC, s.cur.CellID = 0, 0
		if best.hasLoc {
			s.cur.TAC, s.cur.CellID = best.area, best.cell
		}
		if best.act >= 0 {
			act = best.act
		}
	}
	s.cur.AccessTech = kestrel.AccessTechUnknown
	if act >= 0 {
		s.cur.AccessTech = uint8(act)
	}
}

func (s *loop) send(now time.Time) {
	st := s.cur
	s.last = &st
	body := st
	s.emit(kestrel.Record{
		Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: kestrel.PriorityNormal},
		Body:     &body,
	})
	s.sent = true
}

// changed reports a difference worth a record: any field, but the signal
// only when it moves by the hysteresis or becomes known or unknown.
func (s *loop) changed() bool {
	if s.last == nil {
		// The first record waits for the first poll, so that it is whole;
		// a radio that never answers is reported by health.
		return s.cur.Online
	}
	a, b := s.cur, *s.last
	h := int16(s.r.opts.Hysteresis)
	if moved(a.RSSI, b.RSSI, h) || moved(a.RSRP, b.RSRP, h) || moved(a.RSRQ, b.RSRQ, 10*h) {
		return true
	}
	a.RSSI, a.RSRP, a.RSRQ, a.BER = b.RSSI, b.RSRP, b.RSRQ, b.BER
	// The refusal counter rides along with the next record.
	a.RejectedLines = b.RejectedLines
	return a != b
}

func moved(a, b, h int16) bool {
	if (a == 0) != (b == 0) {
		return true
	}
	d := a - b
	if d < 0 {
		d = -d
	}
	return d >= h
}

func (s *loop) event(t time.Time, p kestrel.Priority, ev *kestrel.Event) {
	ev.Source = "radio"
	s.emit(kestrel.Record{Envelope: kestrel.Envelope{Time: t.UnixMilli(), Priority: p}, Body: ev})
}

func (s *loop) health(ev at.Event, refresh chan<- struct{}) {
	switch ev.Type {
	case at.EventSilent:
		s.r.log.Warn("radio offline", "reason", ev.Reason)
		s.cur.Online = false
		if s.last == nil {
			s.send(ev.Time) // never answered: say so
		}
	case at.EventReboot:
		s.resetWhy = ev.Reason
	case at.EventReinit:
		why := ev.Reason
		if s.resetWhy != "" && s.resetWhy != why {
			why = s.resetWhy + "; " + why
		}
		s.resetWhy = ""
		text := "modem re-initialised: " + why
		if ev.Err != nil {
			text += " (set-up incomplete: " + ev.Err.Error() + ")"
		}
		s.event(ev.Time, kestrel.PriorityNormal, &kestrel.Event{Type: kestrel.EventRadioReset, Text: text})
		s.cur.Online = true
		select {
		case refresh <- struct{}{}:
		default:
		}
	}
}

func (s *loop) urc(u at.URC) {
	switch s.r.profile {
	case kestrel.ProfileTETRA:
		s.tetraURC(u)
	case kestrel.ProfileLTE:
		if c, ok := regCmdFor(u.Prefix); ok {
			g, err := parseReg(c, u.Params, false)
			if err != nil {
				s.reject(u.Prefix+" URC", u.Line, err)
				return
			}
			s.applyReg(g)
		}
	}
}

func (s *loop) tetraURC(u at.URC) {
	switch u.Prefix {
	case "+CREG":
		g, err := parseCREGTetra(u.Params, false)
		if err != nil {
			s.reject("+CREG URC", u.Line, err)
			return
		}
		s.applyTetra(g)
	case "+CTOM":
		if m, ok := tetraMode(u.Params); ok {
			s.cur.Mode = m
		}
	case "+CTGS":
		if g := parseIdentity([]string{u.Line}, ""); g != "" {
			s.cur.Talkgroup = g
		}
	case "+CTSDSR":
		s.sds(u)
	case "+CTXD":
		// +CTXD: <CC instance>,<TxDemandPriority>,...: 3 is emergency.
		f := at.SplitParams(u.Params)
		if len(f) >= 2 && f[1] == "3" {
			s.event(u.Time, kestrel.PriorityEmergency, &kestrel.Event{
				Type: kestrel.EventEmergency, Value: 3, Text: "emergency transmit demand"})
		}
	case "+CTICN":
		// +CTICN: <CC instance>,<call status>,<AI service>,[<calling party
		// identity type>],<calling party identity>,<hook>,<simplex>,<end to
		// end encryption>,<comms type>,<slots/codec>,<called party identity
		// type>,<called party identity>,<priority level>: 15 is emergency.
		f := at.SplitParams(u.Params)
		if len(f) >= 13 && strings.TrimSpace(f[12]) == "15" {
			s.event(u.Time, kestrel.PriorityEmergency, &kestrel.Event{
				Type: kestrel.EventEmergency, Name: f[4], Value: 15, Text: "emergency call to " + f[11]})
		}
	}
}

func (s *loop) sds(u at.URC) {
	m, ok := parseCTSDSR(u.Params, u.Data)
	if !ok || len(m.data) == 0 {
		// Never the message: its user data may be personal data.
		if total, skipped, ok := s.badSDS.Note(s.r.opts.Now()); ok {
			n := 0
			for _, d := range u.Data {
				n += len(d)
			}
			s.r.log.Warn("unreadable +CTSDSR: message not logged", "data_lines", len(u.Data), "data_bytes", n, "count", total, "not_logged", skipped)
		}
		return
	}
	if st, ok := m.status(); ok {
		if slices.Contains(s.r.opts.EmergencyStatus, st) {
			s.event(u.Time, kestrel.PriorityEmergency, &kestrel.Event{
				Type: kestrel.EventEmergency, Name: m.from, Value: int64(st),
				Text: fmt.Sprintf("emergency status %d from %s", st, m.from)})
			return
		}
		s.event(u.Time, kestrel.PriorityHigh, &kestrel.Event{
			Type: kestrel.EventStatusMessage, Name: m.from, Value: int64(st)})
		return
	}
	txt, pi, _ := m.text()
	s.event(u.Time, kestrel.PriorityHigh, &kestrel.Event{
		Type: kestrel.EventSDS, Name: m.from, Value: int64(pi), Text: txt})
}
