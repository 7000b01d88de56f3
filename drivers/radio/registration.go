package radio

import (
	"errors"
	"fmt"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Registration reports of 3GPP TS 27.007: +CREG (7.2), +CGREG (10.1.20),
// +CEREG (10.1.22) and +C5GREG. Each has a read response
// "<n>,<stat>[,...]" and an unsolicited form "<stat>[,...]"; the fields
// after <stat> depend on the command and on the <n> the host set:
//
//	+CREG:   <stat>[,[<lac>],[<ci>],[<AcT>][,<cause_type>,<reject_cause>]]
//	+CGREG:  <stat>[,[<lac>],[<ci>],[<AcT>],[<rac>][,[<cause_type>],[<reject_cause>][,[<Active-Time>],[<GPRS-READY-timer>]]]]
//	+CEREG:  <stat>[,[<tac>],[<ci>],[<AcT>][,[<cause_type>],[<reject_cause>][,[<Active-Time>],[<Periodic-TAU>]]]]
//	+C5GREG: <stat>[,[<tac>],[<ci>],[<AcT>],[<Allowed_NSSAI_length>],[<Allowed_NSSAI>][,<cause_type>,<reject_cause>]]
//
// A line is read only when it fits one of these layouts field by field
// (count, quoting of integers, hex widths, value ranges), or one of the
// variants below that real modems send. Anything else is refused.

// maxAcT is the highest <AcT> of 27.007's current table (Release 18):
// 0 GSM ... 7 E-UTRAN, 8 EC-GSM-IoT, 9 E-UTRAN (NB-S1), 10 E-UTRA
// connected to a 5GCN, 11 NR connected to a 5GCN, 12 NG-RAN, 13 E-UTRA-NR
// dual connectivity, 14 satellite E-UTRAN (NB-S1), 15 satellite E-UTRAN
// (WB-S1), 16 satellite NG-RAN.
const maxAcT = 16

// maxStat bounds <stat>: 0-11 are defined; higher values are kept raw
// (RegState is a byte), larger ones are refused.
const maxStat = 255

// maxN is the highest <n> of the read responses (5 for +CEREG/+C5GREG).
const maxN = 5

// regCmd describes one registration command's layout.
type regCmd struct {
	src      kestrel.RegSource
	prefix   string
	enable   string // the set command that turns on the URC with location
	query    string
	areaHex  int   // hex digits of <lac>/<tac>: 2 bytes, 3 for 5GS
	cellHex  int   // hex digits of <ci>: 4 bytes, 5 (36-bit NR) for 5GS
	bodyLens []int // field counts of the unsolicited form
}

var regCmds = []regCmd{
	{kestrel.RegSourceC5GREG, "+C5GREG", "AT+C5GREG=2", "AT+C5GREG?", 6, 10, []int{1, 3, 4, 6, 8}},
	{kestrel.RegSourceCEREG, "+CEREG", "AT+CEREG=2", "AT+CEREG?", 4, 8, []int{1, 3, 4, 6, 8}},
	{kestrel.RegSourceCGREG, "+CGREG", "AT+CGREG=2", "AT+CGREG?", 4, 8, []int{1, 3, 4, 5, 7, 9}},
	{kestrel.RegSourceCREG, "+CREG", "AT+CREG=2", "AT+CREG?", 4, 8, []int{1, 3, 4, 6}},
}

func regCmdFor(prefix string) (regCmd, bool) {
	for _, c := range regCmds {
		if c.prefix == prefix {
			return c, true
		}
	}
	return regCmd{}, false
}

// Names of the variants, as docs/radio.md lists them.
const (
	variantStandard = ""
	// The read form "<n>,<stat>,..." sent as an unsolicited code: Sony
	// Ericsson MD400 (+CREG), Alcatel One-Touch X220D (+CGREG), Altair
	// LTE (+CEREG).
	variantReadFormURC = "read form sent unsolicited"
	// A routing area code between <tac> and <ci> in +CEREG:
	// "<stat>,<tac>,<rac>,<ci>,<AcT>": Novatel Wireless E362.
	variantCEREGRAC = "rac inside +CEREG"
)

// reg is one registration report.
type reg struct {
	src     kestrel.RegSource
	state   kestrel.RegState
	area    uint32 // LA (TETRA, decimal) or LAC/TAC (hex)
	cell    uint64
	act     int // <AcT>, -1 absent
	hasLoc  bool
	net     string // TETRA MNI
	variant string
}

var errLayout = errors.New("fits no known layout")

// parseReg reads a +CREG/+CGREG/+CEREG/+C5GREG line's parameters. read
// is true for the answer to the read command (which starts with <n>).
// The standard layout is tried first; a variant only when it fails, and
// only if exactly one variant fits.
func parseReg(c regCmd, params string, read bool) (reg, error) {
	f, ok := splitFields(params)
	if !ok || len(f) == 0 {
		return reg{}, errLayout
	}
	if read {
		if _, ok := decField(f[0], maxN); !ok || len(f) < 2 {
			return reg{}, errLayout
		}
		if r, err := regBody(c, f[1:]); err == nil {
			return r, nil
		}
		if c.src == kestrel.RegSourceCEREG {
			if r, ok := ceregRAC(f[1:]); ok {
				return r, nil
			}
		}
		return reg{}, errLayout
	}
	if r, err := regBody(c, f); err == nil {
		return r, nil
	}
	var found []reg
	if len(f) >= 4 {
		if _, ok := decField(f[0], maxN); ok {
			if r, err := regBody(c, f[1:]); err == nil && r.hasLoc {
				r.variant = variantReadFormURC
				found = append(found, r)
			}
		}
	}
	if c.src == kestrel.RegSourceCEREG {
		if r, ok := ceregRAC(f); ok {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return reg{}, errLayout
	}
	return found[0], nil
}

// regBody reads the unsolicited form of c: <stat> and what follows it.
func regBody(c regCmd, f []field) (reg, error) {
	fits := false
	for _, n := range c.bodyLens {
		fits = fits || n == len(f)
	}
	if !fits {
		return reg{}, errLayout
	}
	stat, ok := decField(f[0], maxStat)
	if !ok {
		return reg{}, fmt.Errorf("<stat> %q: %w", f[0].s, errLayout)
	}
	r := reg{src: c.src, state: kestrel.RegState(stat), act: -1}
	if len(f) >= 3 {
		switch {
		case f[1].s == "" && f[2].s == "":
		default:
			area, ok1 := hexField(f[1], c.areaHex)
			cell, ok2 := hexField(f[2], c.cellHex)
			if !ok1 || !ok2 || cell >= 1<<36 {
				return reg{}, errLayout
			}
			r.area, r.cell, r.hasLoc = uint32(area), cell, true
		}
	}
	if len(f) >= 4 && f[3].s != "" {
		a, ok := decField(f[3], maxAcT)
		if !ok {
			return reg{}, errLayout
		}
		r.act = a
	}
	if !restFits(c.src, f) {
		return reg{}, errLayout
	}
	return r, nil
}

// restFits checks the fields after <AcT>.
func restFits(src kestrel.RegSource, f []field) bool {
	opt := func(i int, check func(field) bool) bool {
		return i >= len(f) || f[i].s == "" || check(f[i])
	}
	cause := func(x field) bool { _, ok := decField(x, 1); return ok }
	reject := func(x field) bool { _, ok := decField(x, 65535); return ok }
	switch src {
	case kestrel.RegSourceCREG:
		return opt(4, cause) && opt(5, reject)
	case kestrel.RegSourceCGREG:
		rac := func(x field) bool { _, ok := hexField(x, 2); return ok }
		return opt(4, rac) && opt(5, cause) && opt(6, reject) && opt(7, bitsField) && opt(8, bitsField)
	case kestrel.RegSourceCEREG:
		return opt(4, cause) && opt(5, reject) && opt(6, bitsField) && opt(7, bitsField)
	case kestrel.RegSourceC5GREG:
		nssaiLen := func(x field) bool { _, ok := decField(x, 255); return ok }
		nssai := func(x field) bool { return len(x.s) <= 160 }
		return opt(4, nssaiLen) && opt(5, nssai) && opt(6, cause) && opt(7, reject)
	}
	return false
}

// ceregRAC reads the Novatel E362 layout "<stat>,<tac>,<rac>,<ci>,<AcT>".
func ceregRAC(f []field) (reg, bool) {
	if len(f) != 5 {
		return reg{}, false
	}
	stat, ok1 := decField(f[0], maxStat)
	tac, ok2 := hexField(f[1], 4)
	_, ok3 := hexField(f[2], 2)
	ci, ok4 := hexField(f[3], 8)
	act, ok5 := decField(f[4], maxAcT)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return reg{}, false
	}
	return reg{src: kestrel.RegSourceCEREG, state: kestrel.RegState(stat), area: uint32(tac), cell: ci,
		act: act, hasLoc: true, variant: variantCEREGRAC}, true
}

// parseCREGTetra reads TETRA +CREG (EN 300 392-5): the unsolicited form
// "<reg stat>[,[<LA>][,[<MNI>]]]", LA and MNI decimal; the read response
// has <n> first.
func parseCREGTetra(params string, read bool) (reg, error) {
	f, ok := splitFields(params)
	if !ok || len(f) == 0 {
		return reg{}, errLayout
	}
	if read {
		if _, ok := decField(f[0], 1); !ok {
			return reg{}, errLayout
		}
		f = f[1:]
	}
	if len(f) < 1 || len(f) > 3 {
		return reg{}, errLayout
	}
	stat, ok := decField(f[0], maxStat)
	if !ok {
		return reg{}, errLayout
	}
	r := reg{src: kestrel.RegSourceCREG, state: kestrel.RegState(stat), act: -1}
	if len(f) >= 2 && f[1].s != "" {
		la, ok := decField(f[1], 1<<14-1) // 14-bit location area
		if !ok {
			return reg{}, errLayout
		}
		r.area, r.hasLoc = uint32(la), true
	}
	if len(f) >= 3 && f[2].s != "" {
		if f[2].quoted || !digits(f[2].s) || len(f[2].s) > 10 {
			return reg{}, errLayout
		}
		r.net = f[2].s
	}
	return r, nil
}

// rank orders registration states for choosing among the domains a modem
// reports: in service, then emergency only, then RLOS, searching, denied,
// and last not registered, unknown and values outside the table.
func rank(s kestrel.RegState) int {
	switch {
	case s.InService():
		return 5
	case s == kestrel.RegEmergencyOnly:
		return 4
	case s == kestrel.RegRLOS:
		return 3
	case s == kestrel.RegSearching:
		return 2
	case s == kestrel.RegDenied:
		return 1
	}
	return 0
}
