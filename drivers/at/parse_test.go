package at

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	cases := []struct {
		in   string
		want Line
	}{
		{"OK", Line{Kind: LineOK}},
		{" ERROR ", Line{Kind: LineError}},
		{"+CME ERROR: 10", Line{Kind: LineCMEError, Prefix: "+CME ERROR", Params: "10", Code: 10}},
		{"+CME ERROR: SIM not inserted", Line{Kind: LineCMEError, Prefix: "+CME ERROR", Params: "SIM not inserted", Code: -1}},
		{"+CMS ERROR: 500", Line{Kind: LineCMSError, Prefix: "+CMS ERROR", Params: "500", Code: 500}},
		{"NO CARRIER", Line{Kind: LineFinal, Params: "NO CARRIER"}},
		{"CONNECT 9600", Line{Kind: LineFinal, Params: "CONNECT 9600"}},
		{"CONNECTED", Line{Kind: LineText, Params: "CONNECTED"}},
		{"+CSQ: 20,99", Line{Kind: LineInfo, Prefix: "+CSQ", Params: "20,99"}},
		{"+CEREG:1", Line{Kind: LineInfo, Prefix: "+CEREG", Params: "1"}},
		{"^SYSSTART", Line{Kind: LineInfo, Prefix: "^SYSSTART"}},
		{"356938035643809", Line{Kind: LineText, Params: "356938035643809"}},
		{"RING", Line{Kind: LineText, Params: "RING"}},
		{"+", Line{Kind: LineText, Params: "+"}},
		{"", Line{Kind: LineEmpty}},
	}
	for _, c := range cases {
		if got := ParseLine(c.in); got != c.want {
			t.Errorf("ParseLine(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestSplitParams(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{`2,1,"00C3","0A1B2C3D",7`, []string{"2", "1", "00C3", "0A1B2C3D", "7"}},
		{`0,0,"Voda, UK",7`, []string{"0", "0", "Voda, UK", "7"}},
		{` 1 , ,3`, []string{"1", "", "3"}},
		{`"unterminated,x`, []string{"unterminated,x"}},
		{``, nil},
	}
	for _, c := range cases {
		if got := SplitParams(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SplitParams(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCommandPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"AT+CREG?": "+CREG", "at+cesq": "+CESQ", "AT+CTGS=1,123": "+CTGS", "ATE0": "", "AT": "", "AT^SYSINFO": "^SYSINFO",
	} {
		if got := commandPrefix(in); got != want {
			t.Errorf("commandPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseLine: no input may panic, and what ParseLine reports must hold
// together.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"OK", "ERROR", "+CME ERROR: 10", "+CMS ERROR: x", "+CSQ: 20,99", `+CEREG: 2,1,"00C3","0A1B2C3D",7`,
		"+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "+CTICN: 1,0,0,,2342600054321,1,1,0,0,0,1,2342609001001,15",
		"^SYSSTART", "CONNECT", "\x00\xff+:", "+" + string(bytes.Repeat([]byte("A"), 40)) + ":1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l := ParseLine(s)
		if l.Kind == LineInfo && (len(l.Prefix) < 2 || !isPrefixStart(l.Prefix[0])) {
			t.Fatalf("info line with bad prefix %q", l.Prefix)
		}
		if (l.Kind == LineCMEError || l.Kind == LineCMSError) && l.Code < -1 {
			t.Fatalf("negative code %d", l.Code)
		}
		_ = SplitParams(l.Params)
		_, _ = ParamHex(l.Params)
	})
}

// FuzzFeed pushes arbitrary bytes through the line splitter and sorter
// with no command in flight.
func FuzzFeed(f *testing.F) {
	f.Add([]byte("\r\n+CREG: 1,1001,23426\r\n"))
	f.Add([]byte("\r\n+CTSDSR: 12,1,0,2,0,112\r\n82040801476A61746A616A676A61\r\n"))
	f.Add([]byte("RDY\r\nAT+CSQ\rOK\r\n"))
	f.Add(bytes.Repeat([]byte("x"), maxLine+10))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := NewEngine(nil, Options{
			URCPrefixes: []string{"+CREG", "+CTSDSR"}, URCDataLines: map[string]int{"+CTSDSR": 1},
			BootBanners: []string{"RDY"}, URCBuffer: 4,
		})
		e.feed(b)
		if len(e.linebuf) > maxLine {
			t.Fatalf("line buffer grew to %d", len(e.linebuf))
		}
	})
}

func BenchmarkParseLine(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		l := ParseLine(`+CEREG: 2,1,"00C3","0A1B2C3D",7`)
		if l.Kind != LineInfo {
			b.Fatal(l)
		}
	}
}

func BenchmarkSplitParams(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if len(SplitParams(`2,1,"00C3","0A1B2C3D",7`)) != 5 {
			b.Fatal()
		}
	}
}

// BenchmarkPeerRegexp is the peer: the regular-expression matching that
// PEI libraries such as github.com/ftl/tetra-pei use per response line.
func BenchmarkPeerRegexp(b *testing.B) {
	re := regexp.MustCompile(`^(\+[A-Z]+): (.*)$`)
	b.ReportAllocs()
	for b.Loop() {
		m := re.FindStringSubmatch(`+CEREG: 2,1,"00C3","0A1B2C3D",7`)
		if len(m) != 3 || len(strings.Split(m[2], ",")) != 5 {
			b.Fatal(m)
		}
	}
}
