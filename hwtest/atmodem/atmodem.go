// Package atmodem is a scriptable AT modem on a pseudo-terminal. It speaks
// the two radio profiles Kestrel drives: a TETRA radio's Peripheral
// Equipment Interface (ETSI EN 300 392-5) and an LTE modem's 3GPP TS 27.007
// command set, with V.250 echo and result codes.
//
// The code under test opens Path() as it would a real UART. Tests change
// the radio's state (signal, registration, talkgroup...), push URCs at any
// moment, and script the next answer to a command: delays, bytes split
// across writes, URCs in the middle of a response, errors, silence. Reboot
// goes quiet, forgets the settings a real modem forgets (echo back on,
// URCs off, +CMEE off) and prints a boot banner.
//
// The response formats follow the standards' clauses named beside each
// handler; they are written from the specifications, not captured from a
// device.
package atmodem

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/hwtest/pty"
)

// State is what the simulated radio reports. Fields follow the AT
// parameters they feed, in the standards' own units (indices, not dBm).
type State struct {
	// Both profiles: +CSQ <rssi> 0-31 (99 unknown) and <ber> 0-7 (99).
	RSSI, BER int
	// Registration <stat> (+CREG for TETRA, +CEREG for LTE).
	Stat int
	// TETRA: location area and mobile network identity in +CREG.
	LA, MNI string
	// TETRA +CTOM <AI mode>: 0 V+D (TMO), 1 DMO, 2-6 dual watch, repeater.
	Mode int
	// TETRA own ITSI (+CNUMF) and selected group (+CTGS).
	ITSI, Talkgroup string
	// LTE +CESQ <rsrq> 0-34 and <rsrp> 0-97 (255 unknown).
	RSRQ, RSRP int
	// LTE <tac>/<lac> (4 hex digits), <ci> (8 hex digits), <AcT> of every
	// registration report.
	TAC, CI string
	AcT     int
	// LTE +COPS operator name, in OperFormat: 0 long alphanumeric, 1
	// short, 2 numeric (TS 27.007 7.3).
	Operator   string
	OperFormat int
	// LTE registration commands the modem has ("+CREG", "+CGREG",
	// "+CEREG", "+C5GREG"); nil means +CEREG only. Each reports Stat, or
	// RegStat[command] when set. The others answer +CME ERROR: 4.
	RegCmds     []string
	RegStat     map[string]int
	IMEI, ICCID string
}

// lteRegCmds are the 27.007 registration commands the simulator knows.
var lteRegCmds = []string{"+CREG", "+CGREG", "+CEREG", "+C5GREG"}

func (st *State) hasReg(cmd string) bool {
	if st.RegCmds == nil {
		return cmd == "+CEREG"
	}
	for _, c := range st.RegCmds {
		if c == cmd {
			return true
		}
	}
	return false
}

func (st *State) regStat(cmd string) int {
	if v, ok := st.RegStat[cmd]; ok {
		return v
	}
	return st.Stat
}

// DefaultState returns a healthy radio of the profile.
func DefaultState(p kestrel.RadioProfile) State {
	if p == kestrel.ProfileTETRA {
		return State{RSSI: 20, BER: 99, Stat: 1, LA: "1001", MNI: "23426", Mode: 0,
			ITSI: "2342600012345", Talkgroup: "2342609001001"}
	}
	return State{RSSI: 18, BER: 99, Stat: 1, RSRQ: 20, RSRP: 45, TAC: "00C3", CI: "0A1B2C3D", AcT: 7,
		Operator: "EE", IMEI: "356938035643809", ICCID: "8944110068256270054"}
}

// Step is one part of a scripted answer.
type Step func(m *Modem, cmd string)

// Modem is one simulated radio or modem.
type Modem struct {
	profile kestrel.RadioProfile
	p       *pty.PTY
	master  *os.File // non-blocking dup of the master, so Close unblocks Read

	wmu sync.Mutex // one write at a time keeps lines whole

	mu      sync.Mutex
	st      State
	echo    bool
	cmee    int
	cregN   int            // TETRA +CREG
	regN    map[string]int // LTE: <n> of each registration command
	silent  bool
	scripts map[string][]Step
	log     []string

	done   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// New opens a pseudo-terminal and starts answering on it.
func New(profile kestrel.RadioProfile) (*Modem, error) {
	if profile != kestrel.ProfileTETRA && profile != kestrel.ProfileLTE {
		return nil, fmt.Errorf("atmodem: unknown profile %v", profile)
	}
	p, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("atmodem: %w", err)
	}
	fd, err := unix.Dup(int(p.Master.Fd()))
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("atmodem: dup master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		p.Close()
		return nil, fmt.Errorf("atmodem: non-blocking master: %w", err)
	}
	m := &Modem{
		profile: profile,
		p:       p,
		master:  os.NewFile(uintptr(fd), "ptmx"),
		st:      DefaultState(profile),
		echo:    true, // V.250 factory default
		scripts: map[string][]Step{},
		regN:    map[string]int{},
		done:    make(chan struct{}),
	}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

// Path is the slave device to open, e.g. /dev/pts/3.
func (m *Modem) Path() string { return m.p.Path }

// Close hangs up and stops the simulator. Safe to call twice.
func (m *Modem) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	err := m.master.Close()
	m.wg.Wait()
	if perr := m.p.Close(); err == nil {
		err = perr
	}
	return err
}

// Set changes the radio's state; it does not announce the change (use
// URC for that, as a real radio's firmware would).
func (m *Modem) Set(f func(*State)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.st)
}

// State returns a copy of the current state.
func (m *Modem) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// Commands returns the command lines received so far, in order.
func (m *Modem) Commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

// SetSilent makes the modem ignore everything (true) or answer again.
func (m *Modem) SetSilent(s bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.silent = s
}

// Script queues a one-shot answer for the next command that starts with
// cmd (case-insensitive). Several calls for one command queue in order.
func (m *Modem) Script(cmd string, steps ...Step) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := strings.ToUpper(cmd)
	m.scripts[k] = append(m.scripts[k], Step(func(m *Modem, c string) {
		for _, s := range steps {
			s(m, c)
		}
	}))
}

// URC sends unsolicited lines now, each framed <CR><LF>line<CR><LF>.
func (m *Modem) URC(lines ...string) {
	for _, l := range lines {
		m.writeLine(l)
	}
}

// RegistrationURC announces the current registration as the profile's
// URC would with the URC level the host enabled. It sends nothing if the
// host has not enabled it, as a real modem does.
func (m *Modem) RegistrationURC() {
	m.mu.Lock()
	st, cregN := m.st, m.cregN
	var lines []string
	for _, c := range lteRegCmds {
		if !st.hasReg(c) {
			continue
		}
		switch n := m.regN[c]; {
		case n >= 2:
			// TS 27.007 7.2, 10.1.20, 10.1.22: <stat>[,[<lac|tac>],[<ci>],[<AcT>]]
			lines = append(lines, fmt.Sprintf(`%s: %d,"%s","%s",%d`, c, st.regStat(c), st.TAC, st.CI, st.AcT))
		case n == 1:
			lines = append(lines, fmt.Sprintf("%s: %d", c, st.regStat(c)))
		}
	}
	m.mu.Unlock()
	if m.profile == kestrel.ProfileTETRA {
		if cregN > 0 {
			// EN 300 392-5 6.15.x: +CREG: <reg stat>,[<LA>],[<MNI>]
			m.writeLine(fmt.Sprintf("+CREG: %d,%s,%s", st.Stat, st.LA, st.MNI))
		}
		return
	}
	for _, l := range lines {
		m.writeLine(l)
	}
}

// Reboot goes silent for downtime, forgets the host's settings, and
// prints banner (if not empty), as a modem restarting on a brown-out does.
// It returns at once; the reboot runs in the background.
func (m *Modem) Reboot(downtime time.Duration, banner string) {
	m.mu.Lock()
	m.silent = true
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case <-time.After(downtime):
		case <-m.done:
			return
		}
		m.mu.Lock()
		m.silent = false
		m.echo = true
		m.cmee = 0
		m.cregN = 0
		clear(m.regN)
		m.mu.Unlock()
		if banner != "" {
			m.writeLine(banner)
		}
	}()
}

// Steps for Script.

// Lines writes information lines.
func Lines(lines ...string) Step {
	return func(m *Modem, _ string) {
		for _, l := range lines {
			m.writeLine(l)
		}
	}
}

// Default writes the information lines the command would normally get,
// without the final result code.
func Default() Step {
	return func(m *Modem, cmd string) {
		lines, _ := m.answer(cmd)
		for _, l := range lines {
			m.writeLine(l)
		}
	}
}

// Final writes a final result code: "OK", "ERROR", "+CME ERROR: 30".
func Final(code string) Step { return Lines(code) }

// Delay waits before the next step.
func Delay(d time.Duration) Step {
	return func(m *Modem, _ string) {
		select {
		case <-time.After(d):
		case <-m.done:
		}
	}
}

// Raw writes bytes exactly, for framing faults and split lines.
func Raw(b string) Step {
	return func(m *Modem, _ string) { m.write([]byte(b)) }
}

// Notify closes ch when the script reaches this step, so a test can wait
// for a scripted answer to have been written.
func Notify(ch chan struct{}) Step {
	return func(*Modem, string) { close(ch) }
}

// NoAnswer answers nothing: the command times out.
func NoAnswer() Step { return func(*Modem, string) {} }

func (m *Modem) writeLine(l string) { m.write([]byte("\r\n" + l + "\r\n")) }

func (m *Modem) write(b []byte) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	for len(b) > 0 {
		n, err := m.master.Write(b)
		b = b[n:]
		if err != nil {
			return // hung up or closed: like a radio talking to no one
		}
	}
}

func (m *Modem) serve() {
	defer m.wg.Done()
	buf := make([]byte, 256)
	var line []byte
	for {
		n, err := m.master.Read(buf)
		for _, c := range buf[:n] {
			if c == '\r' {
				cmd := strings.TrimSpace(string(line))
				line = line[:0]
				if cmd != "" {
					m.handle(cmd)
				}
				continue
			}
			if c == '\n' {
				continue
			}
			if len(line) < 1024 {
				line = append(line, c)
			}
		}
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if errors.Is(err, syscall.EIO) {
				// No slave open (yet, or between opens): wait for one.
				select {
				case <-time.After(10 * time.Millisecond):
				case <-m.done:
					return
				}
				continue
			}
			return
		}
	}
}

func (m *Modem) handle(cmd string) {
	m.mu.Lock()
	if m.silent {
		m.mu.Unlock()
		return
	}
	m.log = append(m.log, cmd)
	echo := m.echo
	var script Step
	up := strings.ToUpper(cmd)
	for k, q := range m.scripts {
		if strings.HasPrefix(up, k) && len(q) > 0 {
			script = q[0]
			if len(q) == 1 {
				delete(m.scripts, k)
			} else {
				m.scripts[k] = q[1:]
			}
			break
		}
	}
	m.mu.Unlock()

	if echo {
		m.write([]byte(cmd + "\r"))
	}
	if script != nil {
		script(m, cmd)
		return
	}
	lines, final := m.answer(cmd)
	for _, l := range lines {
		m.writeLine(l)
	}
	m.writeLine(final)
}

// answer is the modem's firmware: it applies set commands and returns
// the information lines and final result code of one command.
func (m *Modem) answer(cmd string) ([]string, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	up := strings.ToUpper(cmd)
	st := &m.st
	ok := "OK"
	switch {
	case up == "AT":
		return nil, ok
	case up == "ATE0":
		m.echo = false
		return nil, ok
	case up == "ATE1":
		m.echo = true
		return nil, ok
	case up == "ATZ":
		m.echo, m.cmee, m.cregN = true, 0, 0
		clear(m.regN)
		return nil, ok
	case up == "ATI":
		return []string{"Kestrel simulated " + m.profile.String() + " modem"}, ok
	case strings.HasPrefix(up, "AT+CMEE="):
		if n, good := atoi(up[8:]); good && n >= 0 && n <= 2 {
			m.cmee = n
			return nil, ok
		}
		return nil, m.errCode(3)
	case up == "AT+CSQ" || up == "AT+CSQ?":
		// TS 27.007 8.5 / EN 300 392-5: +CSQ: <rssi>,<ber>
		return []string{fmt.Sprintf("+CSQ: %d,%d", st.RSSI, st.BER)}, ok
	}
	if m.profile == kestrel.ProfileTETRA {
		switch {
		case strings.HasPrefix(up, "AT+CREG="):
			if n, good := atoi(up[8:]); good && n >= 0 && n <= 1 {
				m.cregN = n
				return nil, ok
			}
			return nil, m.errCode(3)
		case up == "AT+CREG?":
			// EN 300 392-5: +CREG: <n>,<reg stat>,[<LA>],[<MNI>]
			return []string{fmt.Sprintf("+CREG: %d,%d,%s,%s", m.cregN, st.Stat, st.LA, st.MNI)}, ok
		case up == "AT+CTOM?":
			return []string{fmt.Sprintf("+CTOM: %d", st.Mode)}, ok
		case strings.HasPrefix(up, "AT+CTOM="):
			if n, good := atoi(up[8:]); good && n >= 0 && n <= 6 {
				st.Mode = n
				return nil, ok
			}
			return nil, m.errCode(3)
		case up == "AT+CNUMF?":
			// +CNUMF: <num type>,<number>; num type 6 is ITSI.
			return []string{"+CNUMF: 6," + st.ITSI}, ok
		case up == "AT+CTGS?":
			// +CTGS: <group type>,<called party identity>; type 1 selected.
			return []string{"+CTGS: 1," + st.Talkgroup}, ok
		case strings.HasPrefix(up, "AT+CTGS="):
			if f := strings.Split(cmd[8:], ","); len(f) == 2 {
				st.Talkgroup = strings.TrimSpace(f[1])
				return nil, ok
			}
			return nil, m.errCode(3)
		case strings.HasPrefix(up, "AT+CTSP="), strings.HasPrefix(up, "AT+CTSDC="):
			return nil, ok
		}
		return nil, m.errCode(4)
	}
	for _, c := range lteRegCmds {
		if !st.hasReg(c) {
			continue
		}
		switch {
		case strings.HasPrefix(up, "AT"+c+"="):
			if n, good := atoi(up[len(c)+3:]); good && n >= 0 && n <= 5 {
				m.regN[c] = n
				return nil, ok
			}
			return nil, m.errCode(3)
		case up == "AT"+c+"?":
			// TS 27.007 7.2, 10.1.20, 10.1.22: <n>,<stat>[,[<lac|tac>],[<ci>],[<AcT>]]
			if n := m.regN[c]; n >= 2 {
				return []string{fmt.Sprintf(`%s: %d,%d,"%s","%s",%d`, c, n, st.regStat(c), st.TAC, st.CI, st.AcT)}, ok
			}
			return []string{fmt.Sprintf("%s: %d,%d", c, m.regN[c], st.regStat(c))}, ok
		}
	}
	switch {
	case up == "AT+CESQ":
		// TS 27.007 8.69: +CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>
		return []string{fmt.Sprintf("+CESQ: 99,99,255,255,%d,%d", st.RSRQ, st.RSRP)}, ok
	case strings.HasPrefix(up, "AT+COPS="):
		return nil, ok
	case up == "AT+COPS?":
		// TS 27.007 7.3: +COPS: <mode>[,<format>,<oper>[,<AcT>]]
		if st.Stat != 1 && st.Stat != 5 {
			return []string{"+COPS: 0"}, ok
		}
		return []string{fmt.Sprintf(`+COPS: 0,%d,"%s",%d`, st.OperFormat, st.Operator, st.AcT)}, ok
	case up == "AT+CGSN":
		// TS 27.007 5.4: the IMEI, bare.
		return []string{st.IMEI}, ok
	case up == "AT+CCID" || up == "AT+CCID?":
		return []string{"+CCID: " + st.ICCID}, ok
	}
	return nil, m.errCode(4)
}

// errCode answers as +CMEE tells: ERROR, +CME ERROR: <n>, or text.
func (m *Modem) errCode(n int) string {
	switch m.cmee {
	case 1:
		return fmt.Sprintf("+CME ERROR: %d", n)
	case 2:
		switch n {
		case 3:
			return "+CME ERROR: operation not allowed"
		case 4:
			return "+CME ERROR: operation not supported"
		}
		return fmt.Sprintf("+CME ERROR: %d", n)
	}
	return "ERROR"
}

func atoi(s string) (int, bool) {
	n := 0
	if s == "" {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > 1<<20 {
			return 0, false
		}
	}
	return n, true
}
