package radio

import (
	"strings"

	"github.com/kestrel-edge/kestrel/drivers/at"
)

// iccid is an ICCID read from the modem, normalised.
type iccid struct {
	value   string
	invalid bool // fails ITU-T E.118: length, MII 89, decimal digits, Luhn
}

// iccidPrefixes are the information prefixes modems put before the ICCID
// in answer to AT+CCID: "+CCID:" (27.007-style, u-blox, Telit), "+ICCID:"
// (SIMCom), "^ICCID:" (Huawei), "+QCCID:" (Quectel). A bare line of digits
// is also common (Sierra Wireless, SIMCom).
var iccidPrefixes = []string{"+CCID", "+ICCID", "^ICCID", "+QCCID"}

// parseICCID reads the ICCID from a response's lines. found is false when
// no line looks like one; err is set when a line does but its value does
// not fit (wrong characters or length), which the caller counts.
//
// Normalisation: EF_ICCID is 10 bytes of BCD, so a 19-digit ICCID is
// padded with a filler F (TS 102 221 13.2), which some modems print
// ("8944200053671052499F") and others strip; the filler is removed. A
// modem that prints the raw bytes prints each digit pair swapped
// ("984402...": E.118's MII 89 comes out as 98); that form is put right.
// The result must be 19 or 20 characters; it is flagged invalid (and kept)
// when it is not all decimal, does not start with 89, or fails the Luhn
// check digit of E.118.
func parseICCID(lines []string) (id iccid, found bool, err error) {
	v, found, err := identityValue(lines, iccidPrefixes)
	if !found || err != nil {
		return iccid{}, found, err
	}
	id, err = normaliseICCID(v)
	return id, true, err
}

// identityValue finds the first line that is a bare value or an
// information line with one of prefixes, and returns its value, quotes
// removed. An information line with more than one field is refused.
func identityValue(lines []string, prefixes []string) (string, bool, error) {
	for _, ln := range lines {
		l := at.ParseLine(ln)
		v := ""
		switch l.Kind {
		case at.LineText:
			v = l.Params
		case at.LineInfo:
			ok := false
			for _, p := range prefixes {
				ok = ok || strings.EqualFold(l.Prefix, p)
			}
			if !ok {
				continue
			}
			f, good := splitFields(l.Params)
			if !good || len(f) != 1 {
				return "", true, errLayout
			}
			v = f[0].s
		default:
			continue
		}
		if v = strings.Trim(strings.TrimSpace(v), `"`); v != "" {
			return v, true, nil
		}
	}
	return "", false, nil
}

func normaliseICCID(v string) (iccid, error) {
	if len(v) > 22 {
		return iccid{}, errLayout
	}
	b := []byte(strings.ToUpper(v))
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return iccid{}, errLayout
		}
	}
	if len(b) == 20 && b[0] == '9' && b[1] == '8' {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	s := strings.TrimRight(string(b), "F")
	if len(s) < 19 || len(s) > 20 {
		return iccid{}, errLayout
	}
	return iccid{value: s, invalid: !digits(s) || !strings.HasPrefix(s, "89") || !luhn(s)}, nil
}

// luhn checks the Luhn (ISO/IEC 7812-1) check digit, the last digit of s.
func luhn(s string) bool {
	sum := 0
	for i := 0; i < len(s); i++ {
		d := int(s[len(s)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// parseIMEI reads the IMEI answered to AT+CGSN (27.007 5.4): bare, or
// after "+CGSN:", quoted or not. It must be 15 decimal digits (an IMEI,
// 3GPP TS 23.003 6.2.1) or 16 (an IMEISV, which some modems answer).
func parseIMEI(lines []string) (string, bool, error) {
	v, found, err := identityValue(lines, []string{"+CGSN"})
	if !found || err != nil {
		return "", found, err
	}
	if !digits(v) || len(v) < 15 || len(v) > 16 {
		return "", true, errLayout
	}
	return v, true, nil
}
