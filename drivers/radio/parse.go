package radio

import (
	"encoding/hex"
	"strings"
	"unicode/utf16"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/at"
)

// csqDBm converts a +CSQ <rssi> index to dBm: 0 is -113 dBm or less, 31 is
// -51 dBm or more, 2 dB a step (TS 27.007 8.5, the same scale in
// EN 300 392-5). 99 (unknown) and out-of-range values give 0.
func csqDBm(idx int) int16 {
	if idx < 0 || idx > 31 {
		return 0
	}
	return int16(-113 + 2*idx)
}

// parseCSQ reads "<rssi>,<ber>" (TS 27.007 8.5, EN 300 392-5): rssi
// 0-31 or 99 (not known), ber 0-7 or 99.
func parseCSQ(params string) (rssi int16, ber uint8, err error) {
	f, ok := splitFields(params)
	if !ok || len(f) != 2 {
		return 0, 0, errLayout
	}
	r, ok1 := decField(f[0], 99)
	b, ok2 := decField(f[1], 99)
	if !ok1 || !ok2 || (r > 31 && r != 99) || (b > 7 && b != 99) {
		return 0, 0, errLayout
	}
	return csqDBm(r), uint8(b), nil
}

// parseCESQ reads "<rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>" (TS 27.007
// 8.69), and the Release 15 form with ",<ss_rsrq>,<ss_rsrp>,<ss_sinr>"
// appended. RSRQ index 0-34 maps to -20 ... -3 dB in 0.5 dB steps
// (returned in tenths of a dB); RSRP 0-97 to -141 ... -44 dBm (index 1 is
// -140 dBm). 255 is "not known", returned as 0. Each field must be in its
// range: rxlev 0-63, ber 0-7 (99 not known), rscp 0-96, ecno 0-49, the
// 5G fields 0-127 (255 not known).
func parseCESQ(params string) (rsrq, rsrp int16, err error) {
	f, ok := splitFields(params)
	if !ok || (len(f) != 6 && len(f) != 9) {
		return 0, 0, errLayout
	}
	max := []int{63, 7, 96, 49, 34, 97, 127, 127, 127}
	unknown := []int{99, 99, 255, 255, 255, 255, 255, 255, 255}
	v := make([]int, len(f))
	for i := range f {
		n, ok := decField(f[i], 255)
		if !ok || (n > max[i] && n != unknown[i]) {
			return 0, 0, errLayout
		}
		v[i] = n
	}
	if q := v[4]; q <= 34 {
		rsrq = int16(-200 + 5*q)
	}
	if p := v[5]; p <= 97 {
		rsrp = int16(-141 + p)
	}
	return rsrq, rsrp, nil
}

// cops is a +COPS read response.
type cops struct {
	oper   string // "" when the modem is not registered ("+COPS: <mode>")
	format kestrel.OperatorFormat
	act    int // -1 absent
}

// parseCOPS reads "<mode>[,<format>,<oper>[,<AcT>]]" (TS 27.007 7.3):
// mode 0-4, format 0 long alphanumeric, 1 short alphanumeric, 2 numeric
// (MCC and MNC, 5 or 6 digits), AcT from the current table.
func parseCOPS(params string) (cops, error) {
	f, ok := splitFields(params)
	if !ok || (len(f) != 1 && len(f) != 3 && len(f) != 4) {
		return cops{}, errLayout
	}
	if _, ok := decField(f[0], 4); !ok {
		return cops{}, errLayout
	}
	c := cops{act: -1}
	if len(f) == 1 {
		return c, nil
	}
	format, ok := decField(f[1], 2)
	if !ok {
		return cops{}, errLayout
	}
	c.format, c.oper = kestrel.OperatorFormat(format), f[2].s
	switch {
	case c.oper == "" || len(c.oper) > 64:
		return cops{}, errLayout
	case c.format == kestrel.OperatorNumeric && (!digits(c.oper) || len(c.oper) < 5 || len(c.oper) > 6):
		return cops{}, errLayout
	}
	if len(f) == 4 && f[3].s != "" {
		a, ok := decField(f[3], maxAcT)
		if !ok {
			return cops{}, errLayout
		}
		c.act = a
	}
	return c, nil
}

// tetraMode maps the PEI <AI mode> of +CTOM: 0 V+D (trunked), 1 DMO,
// 2 V+D with dual watch of DMO, 3 DMO with dual watch of V+D, 4 V+D and
// DMO, 5 DMO gateway, 6 DMO repeater. Dual watch counts as the mode it
// transmits in.
func tetraMode(params string) (kestrel.TETRAMode, bool) {
	f := at.SplitParams(params)
	if len(f) < 1 {
		return 0, false
	}
	m, ok := at.ParamInt(f[0])
	if !ok {
		return 0, false
	}
	switch m {
	case 0, 2, 4:
		return kestrel.ModeTMO, true
	case 1, 3, 5, 6:
		return kestrel.ModeDMO, true
	}
	return kestrel.ModeUnknown, true
}

// parseIdentity reads "+CNUMF: <num type>,<number>" and
// "+CTGS: <group type>,<called party identity>" lines: the second field.
// For +CTGS it prefers group type 1 (the selected group).
func parseIdentity(lines []string, prefer string) string {
	first := ""
	for _, ln := range lines {
		l := at.ParseLine(ln)
		f := at.SplitParams(l.Params)
		if len(f) < 2 || !digits(f[1]) {
			continue
		}
		if first == "" {
			first = f[1]
		}
		if prefer != "" && f[0] == prefer {
			return f[1]
		}
	}
	return first
}

func digits(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// AI service values of +CTSDSR (EN 300 392-5 clause 6.17).
const (
	aiSDS1   = 9
	aiSDS2   = 10
	aiSDS3   = 11
	aiSDSTL  = 12 // SDS type 4, with SDS-TL
	aiStatus = 13
)

// sds is one +CTSDSR message.
type sds struct {
	service int
	from    string
	to      string
	bits    int
	data    []byte
}

// parseCTSDSR reads "+CTSDSR: <AI service>,[<calling party identity>],
// [<calling party identity type>],<called party identity>,<called party
// identity type>,<length>[,<end to end encryption>]" and its user data line
// (hex). Radios that leave out the calling party send 3 or 4 fields.
func parseCTSDSR(params string, data []string) (sds, bool) {
	f := at.SplitParams(params)
	var s sds
	var lenField string
	switch len(f) {
	case 3:
		s.to, lenField = f[1], f[2]
	case 4:
		s.to, lenField = f[1], f[3]
	case 6, 7:
		s.from, s.to, lenField = f[1], f[3], f[5]
	default:
		return sds{}, false
	}
	svc, ok := at.ParamInt(f[0])
	if !ok {
		return sds{}, false
	}
	bits, ok := at.ParamInt(lenField)
	if !ok || bits < 0 || bits > 8*2048 {
		return sds{}, false
	}
	s.service, s.bits = svc, bits
	if len(data) > 0 {
		h := strings.TrimSpace(data[0])
		if len(h)%2 == 1 {
			h += "0"
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			return sds{}, false
		}
		if n := (bits + 7) / 8; len(b) > n {
			b = b[:n]
		}
		s.data = b
	}
	return s, true
}

// status returns the 16-bit pre-coded status value of an AI service 13
// message.
func (s sds) status() (uint16, bool) {
	if s.service != aiStatus || len(s.data) < 2 {
		return 0, false
	}
	return uint16(s.data[0])<<8 | uint16(s.data[1]), true
}

// text decodes SDS-TL text (EN 300 392-2 clause 29): protocol 0x02 simple
// text and 0x09 simple immediate text carry <coding><text>; 0x82 text and
// 0x89 immediate text carry an SDS-TRANSFER header before it. Other
// content comes back as hex with ok false.
func (s sds) text() (string, uint8, bool) {
	b := s.data
	if s.service != aiSDSTL || len(b) < 2 {
		return strings.ToUpper(hex.EncodeToString(b)), 0, false
	}
	pi := b[0]
	var body []byte
	switch pi {
	case 0x02, 0x09:
		body = b[1:]
	case 0x82, 0x89:
		if len(b) < 4 || b[1]>>4 != 0 { // only SDS-TRANSFER carries text
			return strings.ToUpper(hex.EncodeToString(b)), pi, false
		}
		i := 3
		if b[1]&0x01 != 0 { // store/forward control present
			i++
			if i >= len(b) {
				return strings.ToUpper(hex.EncodeToString(b)), pi, false
			}
			if b[i-1]&0x80 != 0 { // validity and forward address: not decoded
				return strings.ToUpper(hex.EncodeToString(b)), pi, false
			}
		}
		if i >= len(b) {
			return "", pi, true
		}
		body = b[i:]
		// Timestamp used flag (top bit of the text header) adds 24 bits.
		if body[0]&0x80 != 0 {
			if len(body) < 4 {
				return strings.ToUpper(hex.EncodeToString(b)), pi, false
			}
			body = append([]byte{body[0] & 0x7f}, body[4:]...)
		}
	default:
		return strings.ToUpper(hex.EncodeToString(b)), pi, false
	}
	if len(body) == 0 {
		return "", pi, true
	}
	coding, txt := body[0]&0x7f, body[1:]
	switch {
	case coding >= 0x01 && coding <= 0x0d:
		// ISO/IEC 8859-n: decoded as Latin-1, exact for ASCII.
		r := make([]rune, len(txt))
		for i, c := range txt {
			r[i] = rune(c)
		}
		return string(r), pi, true
	case coding == 0x1a && len(txt)%2 == 0:
		u := make([]uint16, len(txt)/2)
		for i := range u {
			u[i] = uint16(txt[2*i])<<8 | uint16(txt[2*i+1])
		}
		return string(utf16.Decode(u)), pi, true
	}
	return strings.ToUpper(hex.EncodeToString(b)), pi, false
}
