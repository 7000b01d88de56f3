package selftest

import (
	"strings"
	"testing"
)

// FuzzRadioAnswers feeds arbitrary radio answers to the parsers of the
// radio check: none may panic, and what they return must be printable on
// one table row.
func FuzzRadioAnswers(f *testing.F) {
	for _, s := range []string{
		"+CEREG: 2,1,\"00C3\",\"0A1B2C3D\",7",
		"+CREG: 0,1,1001,23426",
		"+CSQ: 18,99",
		"+CSQ: 99,99",
		"+COPS: 0,0,\"EE\",7",
		"+COPS: 0,0,\"a,b\tc\nd\",7",
		"+COPS: 0",
		"+CTOM: 1",
		"+CTOM: ",
		"ERROR",
		"+CME ERROR: 30",
		"",
		",,,,",
		"+CSQ: -5,x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lines := strings.Split(s, "\n")
		parseRegStat(lines)
		parseCSQ(lines)
		for _, out := range []string{parseOperator(lines), parseTetraMode(lines)} {
			if strings.ContainsAny(out, "\r\n\t") {
				t.Fatalf("%q: result %q breaks the table row", s, out)
			}
		}
	})
}
