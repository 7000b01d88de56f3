package radio

import "strings"

// field is one parameter of an information line, with whether it was
// double-quoted: 27.007 sends string types (<lac>, <ci>, <oper>) quoted and
// integer types (<stat>, <AcT>) bare, and that difference tells some
// layouts apart.
type field struct {
	s      string
	quoted bool
}

// maxFields bounds the parameters of one line; no layout Kestrel reads
// has more than 10.
const maxFields = 16

// splitFields splits the parameters of an information line at commas.
// Spaces around a field are dropped; a quoted field keeps its commas and
// loses its quotes. It refuses an unterminated quote, text between a
// closing quote and the next comma, and more than maxFields fields, so
// that a garbled line is not read as a shorter one.
func splitFields(s string) ([]field, bool) {
	if strings.TrimSpace(s) == "" {
		return nil, true
	}
	out := make([]field, 0, strings.Count(s, ",")+1)
	i := 0
	for {
		if len(out) == maxFields {
			return nil, false
		}
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i < len(s) && s[i] == '"' {
			k := strings.IndexByte(s[i+1:], '"')
			if k < 0 {
				return nil, false
			}
			out = append(out, field{s: s[i+1 : i+1+k], quoted: true})
			i += k + 2
			for i < len(s) && s[i] == ' ' {
				i++
			}
			if i == len(s) {
				return out, true
			}
			if s[i] != ',' {
				return nil, false
			}
			i++
			continue
		}
		c := strings.IndexByte(s[i:], ',')
		if c < 0 {
			return append(out, field{s: strings.TrimSpace(s[i:])}), true
		}
		out = append(out, field{s: strings.TrimSpace(s[i : i+c])})
		i += c + 1
	}
}

// decField reads an unquoted decimal integer of at most 5 digits (leading
// zeros allowed, as Iridium's "002" and others send) no greater than max.
func decField(f field, max int) (int, bool) {
	if f.quoted || f.s == "" || len(f.s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(f.s); i++ {
		c := f.s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= max
}

// hexField reads a hexadecimal string of 1 to digits digits, quoted or
// not (27.007 quotes <lac>, <tac>, <ci>; many modems leave them bare).
func hexField(f field, digits int) (uint64, bool) {
	if f.s == "" || len(f.s) > digits {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(f.s); i++ {
		c := f.s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(d)
	}
	return n, true
}

// bitsField accepts an empty field or a string of up to 8 binary digits
// (the timers of +CEREG/+CGREG with <n> 4 or 5, 24.008 coding).
func bitsField(f field) bool {
	if len(f.s) > 8 {
		return false
	}
	for i := 0; i < len(f.s); i++ {
		if f.s[i] != '0' && f.s[i] != '1' {
			return false
		}
	}
	return true
}
