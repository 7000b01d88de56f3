package at

import (
	"strconv"
	"strings"
)

// LineKind is what a line from the modem is, judged on its own.
type LineKind uint8

const (
	LineEmpty    LineKind = iota
	LineOK                // final: OK
	LineError             // final: ERROR
	LineCMEError          // final: +CME ERROR: <err>
	LineCMSError          // final: +CMS ERROR: <err>
	LineFinal             // final: NO CARRIER, BUSY, NO ANSWER, NO DIALTONE, CONNECT
	LineInfo              // +NAME: params (information response or URC)
	LineText              // anything else: bare values (IMEI), RING, banners, echo
)

var lineKindNames = [...]string{"empty", "ok", "error", "cme_error", "cms_error", "final", "info", "text"}

func (k LineKind) String() string {
	if int(k) < len(lineKindNames) {
		return lineKindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Line is one parsed line.
type Line struct {
	Kind LineKind
	// Prefix is the name of an information line, with its leading
	// character: "+CSQ", "^SYSINFO". Empty for other kinds.
	Prefix string
	// Params is the text after "+NAME:", trimmed. For +CME/+CMS ERROR it
	// is the error as sent.
	Params string
	// Code is the numeric +CME/+CMS error, or -1 when the modem sent text
	// (AT+CMEE=2) or no number.
	Code int
}

// Final reports whether the line ends a command's response.
func (l Line) Final() bool {
	switch l.Kind {
	case LineOK, LineError, LineCMEError, LineCMSError, LineFinal:
		return true
	}
	return false
}

// maxPrefix bounds an information line's name, so that a line of noise
// with a colon far along is not taken for one.
const maxPrefix = 32

// ParseLine sorts one line (without its CR LF) into its kind. It never
// fails: what it does not recognise is LineText.
func ParseLine(s string) Line {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return Line{Kind: LineEmpty}
	case "OK":
		return Line{Kind: LineOK}
	case "ERROR":
		return Line{Kind: LineError}
	case "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE":
		return Line{Kind: LineFinal, Params: s}
	}
	if strings.HasPrefix(s, "CONNECT") && (len(s) == 7 || s[7] == ' ') {
		return Line{Kind: LineFinal, Params: s}
	}
	if rest, ok := strings.CutPrefix(s, "+CME ERROR:"); ok {
		return errLine(LineCMEError, "+CME ERROR", rest)
	}
	if rest, ok := strings.CutPrefix(s, "+CMS ERROR:"); ok {
		return errLine(LineCMSError, "+CMS ERROR", rest)
	}
	if isPrefixStart(s[0]) {
		i := 1
		for i < len(s) && i <= maxPrefix && isNameByte(s[i]) {
			i++
		}
		if i > 1 {
			if i == len(s) {
				return Line{Kind: LineInfo, Prefix: s}
			}
			if s[i] == ':' {
				return Line{Kind: LineInfo, Prefix: s[:i], Params: strings.TrimSpace(s[i+1:])}
			}
		}
	}
	return Line{Kind: LineText, Params: s}
}

func errLine(k LineKind, prefix, rest string) Line {
	rest = strings.TrimSpace(rest)
	code := -1
	if n, err := strconv.Atoi(rest); err == nil && n >= 0 {
		code = n
	}
	return Line{Kind: k, Prefix: prefix, Params: rest, Code: code}
}

// isPrefixStart accepts the characters that start a command name in V.250
// (+ for standard, & ^ % $ # * for vendor extensions).
func isPrefixStart(c byte) bool {
	switch c {
	case '+', '^', '%', '$', '#', '*':
		return true
	}
	return false
}

func isNameByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
}

// SplitParams splits the parameters of an information line at commas.
// Double-quoted strings keep their commas and lose their quotes; spaces
// around fields are trimmed. An empty field (",,") is an empty string,
// which 27.007 uses for an omitted optional value. An unterminated quote
// runs to the end of the line. The fields are substrings of s: one
// allocation, for the slice.
func SplitParams(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	out := make([]string, 0, strings.Count(s, ",")+1)
	i := 0
	for {
		j := i
		for j < len(s) && s[j] == ' ' {
			j++
		}
		if j < len(s) && s[j] == '"' {
			k := strings.IndexByte(s[j+1:], '"')
			if k < 0 {
				return append(out, s[j+1:])
			}
			out = append(out, s[j+1:j+1+k])
			rest := j + 1 + k + 1
			c := strings.IndexByte(s[rest:], ',')
			if c < 0 {
				return out
			}
			i = rest + c + 1
			continue
		}
		c := strings.IndexByte(s[i:], ',')
		if c < 0 {
			return append(out, strings.TrimSpace(s[i:]))
		}
		out = append(out, strings.TrimSpace(s[i:i+c]))
		i += c + 1
	}
}

// ParamInt parses a decimal field; ok is false for an empty or bad field.
func ParamInt(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return n, err == nil
}

// ParamHex parses a hexadecimal field as 27.007 sends location and cell
// identities ("00C3", quotes already removed by SplitParams).
func ParamHex(s string) (uint32, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 16, 32)
	return uint32(n), err == nil
}

// commandPrefix is the information prefix a command's response carries:
// "AT+CREG?" → "+CREG". It returns "" for basic commands (ATE0, AT, ATI).
func commandPrefix(cmd string) string {
	s := strings.TrimSpace(cmd)
	if len(s) >= 2 && (s[0] == 'A' || s[0] == 'a') && (s[1] == 'T' || s[1] == 't') {
		s = s[2:]
	}
	if s == "" || !isPrefixStart(s[0]) {
		return ""
	}
	i := 1
	for i < len(s) && isNameByte(s[i]) {
		i++
	}
	if i == 1 {
		return ""
	}
	return strings.ToUpper(s[:i])
}
