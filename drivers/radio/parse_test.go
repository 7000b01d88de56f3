package radio

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/at"
)

func TestSignalScales(t *testing.T) {
	// TS 27.007 8.5: 0 → -113 dBm, 31 → -51 dBm, 99 unknown.
	for idx, want := range map[int]int16{0: -113, 1: -111, 31: -51, 99: 0, 32: 0, -1: 0} {
		if got := csqDBm(idx); got != want {
			t.Errorf("csqDBm(%d) = %d, want %d", idx, got, want)
		}
	}
	// TS 27.007 8.69: rsrq 0 → below -19.5 dB (-20), 34 → -3 dB;
	// rsrp 1 → -140 dBm, 97 → -44 dBm; 255 unknown.
	cases := []struct {
		in         string
		rsrq, rsrp int16
	}{
		{"99,99,255,255,0,1", -200, -140},
		{"99,99,255,255,34,97", -30, -44},
		{"99,99,255,255,255,255", 0, 0},
		{"99,99,255,255,20,45", -100, -96},
		{"99,99,255,255,20,45,255,255,255", -100, -96}, // Release 15 form with the 5G fields
	}
	for _, c := range cases {
		q, p, err := parseCESQ(c.in)
		if err != nil || q != c.rsrq || p != c.rsrp {
			t.Errorf("parseCESQ(%q) = %d, %d, %v; want %d, %d", c.in, q, p, err, c.rsrq, c.rsrp)
		}
	}
	for _, bad := range []string{"99,99,255,255,35,45", "99,99,255,255,20,98", "99,99,255,255,20", "99,99,255,255,20,45,1", "99,99,255,255,20,-1"} {
		if _, _, err := parseCESQ(bad); err == nil {
			t.Errorf("parseCESQ(%q) accepted", bad)
		}
	}
	if r, b, err := parseCSQ("20,99"); err != nil || r != -73 || b != 99 {
		t.Errorf("parseCSQ: %d %d %v", r, b, err)
	}
	for _, bad := range []string{"32,99", "20,8", "20", "20,99,1", `"20",99`} {
		if _, _, err := parseCSQ(bad); err == nil {
			t.Errorf("parseCSQ(%q) accepted", bad)
		}
	}
}

// vector is one line of a testdata table.
type vector struct {
	where  string // file:line
	modem  string
	form   string
	line   string
	expect string
}

func readVectors(t testing.TB, name string) []vector {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		p := strings.Split(l, "|")
		if len(p) != 4 {
			t.Fatalf("%s:%d: want 4 fields, got %q", name, n, l)
		}
		out = append(out, vector{fmt.Sprintf("%s:%d", name, n), strings.TrimSpace(p[0]), strings.TrimSpace(p[1]),
			strings.TrimSpace(p[2]), strings.TrimSpace(p[3])})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// describe prints a report in the notation of testdata/registration.txt.
func (g reg) describe() string {
	s := "stat=" + strconv.Itoa(int(g.state))
	if g.hasLoc {
		s += fmt.Sprintf(" area=%X cell=%X", g.area, g.cell)
	}
	if g.act >= 0 {
		s += " act=" + strconv.Itoa(g.act)
	}
	switch g.variant {
	case variantReadFormURC:
		s += " variant=read-form"
	case variantCEREGRAC:
		s += " variant=rac"
	}
	return s
}

// TestRegistrationVectors reads every real-modem line of
// testdata/registration.txt as the driver does and compares what it
// stores with the expectation, refusals included.
func TestRegistrationVectors(t *testing.T) {
	vs := readVectors(t, "registration.txt")
	if len(vs) < 60 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		l := at.ParseLine(v.line)
		c, ok := regCmdFor(l.Prefix)
		if l.Kind != at.LineInfo || !ok {
			t.Errorf("%s: %q is not a registration line", v.where, v.line)
			continue
		}
		g, err := parseReg(c, l.Params, v.form == "read")
		got := "refused"
		if err == nil {
			got = g.describe()
			if g.src != c.src {
				t.Errorf("%s: source %v, want %v", v.where, g.src, c.src)
			}
		}
		if got != v.expect {
			t.Errorf("%s: %s %q (%s)\n got %s\nwant %s", v.where, v.form, v.line, v.modem, got, v.expect)
		}
	}
}

func TestRegistrationStates(t *testing.T) {
	// Every state of the current table has its own value and name; a
	// state above it is kept as sent.
	seen := map[string]bool{}
	for st := kestrel.RegState(0); st <= kestrel.RegRLOS; st++ {
		if seen[st.String()] || strings.HasPrefix(st.String(), "stat_") {
			t.Errorf("state %d named %q", st, st)
		}
		seen[st.String()] = true
	}
	if kestrel.RegEmergencyOnly.String() != "emergency_only" || kestrel.RegEmergencyOnly.InService() {
		t.Error("emergency only is not its own state")
	}
	if kestrel.RegState(90).String() != "stat_90" {
		t.Error(kestrel.RegState(90).String())
	}
	for _, st := range []kestrel.RegState{1, 5, 6, 7, 9, 10} {
		if !st.InService() {
			t.Errorf("%v not in service", st)
		}
	}
}

func TestTETRARegistration(t *testing.T) {
	g, err := parseCREGTetra("1,1001,23426", false)
	if err != nil || g.state != kestrel.RegHome || g.area != 1001 || g.net != "23426" {
		t.Fatalf("TETRA URC: %+v %v", g, err)
	}
	g, err = parseCREGTetra("1,5,1001,23426", true)
	if err != nil || g.state != kestrel.RegRoaming || g.area != 1001 {
		t.Fatalf("TETRA read: %+v %v", g, err)
	}
	for _, bad := range []string{"1,1001,23426,7", "x", "1,1F,23426", `1,1001,"23426"`, "2,1,1001,23426"} {
		if _, err := parseCREGTetra(bad, bad[0] == '2'); err == nil {
			t.Errorf("TETRA %q accepted", bad)
		}
	}
}

func TestIdentityVectors(t *testing.T) {
	for _, v := range readVectors(t, "identity.txt") {
		var got string
		switch v.form {
		case "AT+CCID":
			id, found, err := parseICCID([]string{v.line})
			switch {
			case err != nil:
				got = "refused"
			case !found:
				got = "not found"
			case id.invalid:
				got = id.value + " invalid"
			default:
				got = id.value + " valid"
			}
		case "AT+COPS?":
			c, err := parseCOPS(at.ParseLine(v.line).Params)
			switch {
			case err != nil:
				got = "refused"
			case c.oper == "":
				got = "none"
			default:
				got = "format=" + c.format.String() + " oper=" + c.oper
				if c.act >= 0 {
					got += " act=" + strconv.Itoa(c.act)
				}
			}
		default:
			t.Fatalf("%s: command %q", v.where, v.form)
		}
		if got != v.expect {
			t.Errorf("%s: %q (%s)\n got %s\nwant %s", v.where, v.line, v.modem, got, v.expect)
		}
	}
}

func TestIMEI(t *testing.T) {
	// ModemManager's device-id vectors: Huawei E1550 and Novatel XU870
	// answer AT+CGSN bare; Option iCON 7.2 appends a serial number.
	for line, want := range map[string]string{
		"235012412595195":            "235012412595195",
		"012051505051501":            "012051505051501",
		`+CGSN: "356938035643809"`:   "356938035643809",
		"129512359199159,SE393939TS": "refused",
		"0x3B0C4B98":                 "refused",
	} {
		v, found, err := parseIMEI([]string{line})
		got := v
		if err != nil {
			got = "refused"
		} else if !found {
			got = "not found"
		}
		if got != want {
			t.Errorf("parseIMEI(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestSplitFields(t *testing.T) {
	f, ok := splitFields(` 2, "a,b" ,, 7 `)
	if !ok || len(f) != 4 || f[0].s != "2" || f[1].s != "a,b" || !f[1].quoted || f[2].s != "" || f[3].s != "7" {
		t.Fatalf("%+v %v", f, ok)
	}
	for _, bad := range []string{`"open`, `"a"b,1`, strings.Repeat("1,", maxFields)} {
		if _, ok := splitFields(bad); ok {
			t.Errorf("splitFields(%q) accepted", bad)
		}
	}
}

func TestCTSDSR(t *testing.T) {
	m, ok := parseCTSDSR("12,23404,0,23401,0,112", []string{"82040801476A61746A616A676A61"})
	if !ok || m.from != "23404" || m.to != "23401" || m.bits != 112 {
		t.Fatalf("header %+v", m)
	}
	if txt, pi, ok := m.text(); !ok || txt != "Gjatjajgja" || pi != 0x82 {
		t.Fatalf("text %q %x %v", txt, pi, ok)
	}
	// Simple text (0x02), Latin-1 with a pound sign.
	m, _ = parseCTSDSR("12,1,0,2,0,48", []string{"0201A3353030"})
	if txt, _, ok := m.text(); !ok || txt != "£500" {
		t.Fatalf("simple text %q", txt)
	}
	// Minimal header: no calling party.
	m, ok = parseCTSDSR("13,2342600012345,16", []string{"8002"})
	if st, sok := m.status(); !ok || !sok || st != 0x8002 || m.from != "" {
		t.Fatalf("minimal status %+v", m)
	}
	// Length shorter than the data: the data is cut to length.
	m, _ = parseCTSDSR("13,1,0,2,0,16", []string{"8002FFFF"})
	if len(m.data) != 2 {
		t.Fatalf("data %x", m.data)
	}
	if _, ok := parseCTSDSR("13,1,0,2,0,16", []string{"zz"}); ok {
		t.Fatal("bad hex accepted")
	}
}

func FuzzTETRA(f *testing.F) {
	f.Add("12,23404,0,23401,0,112", "82040801476A61746A616A676A61")
	f.Add("13,2342600054321,0,2342600012345,0,16", "0000")
	f.Add("12,1,0,2,0,48", "0201A3353030")
	f.Add("12,1,0,2,0,64", "8205080181000000")
	f.Add("12,1,0,2,0,40", "82010801")
	f.Add("12,1,0,2,0,56", "020A1A00410042")
	f.Add("1,1001,23426", "")
	f.Add("2,0,0,1,2342600054321,1,1,0,0,0,1,2342609001001,15", "")
	f.Fuzz(func(t *testing.T, params, data string) {
		if m, ok := parseCTSDSR(params, []string{data}); ok {
			if len(m.data) > (m.bits+7)/8 {
				t.Fatalf("data longer than its length field")
			}
			m.status()
			m.text()
		}
		for _, read := range []bool{true, false} {
			if g, err := parseCREGTetra(params, read); err == nil && (g.area >= 1<<14 || len(g.net) > 10) {
				t.Fatalf("TETRA +CREG out of range: %+v", g)
			}
		}
		tetraMode(params)
		parseIdentity([]string{"+CTGS: " + params, data}, "1")
	})
}

// FuzzLTE feeds every 27.007 parser the same parameters. Seeds: the
// real-modem lines of testdata. Whatever is accepted must be in range.
func FuzzLTE(f *testing.F) {
	for _, name := range []string{"registration.txt", "identity.txt"} {
		for _, v := range readVectors(f, name) {
			f.Add(at.ParseLine(v.line).Params)
		}
	}
	f.Add(`99,99,255,255,20,45`)
	f.Add(`20,99`)
	f.Add(`"unterminated`)
	f.Fuzz(func(t *testing.T, params string) {
		if _, b, err := parseCSQ(params); err == nil && b > 7 && b != 99 {
			t.Fatalf("ber %d", b)
		}
		if q, p, err := parseCESQ(params); err == nil {
			if q < -200 || q > 0 || p < -141 || p > 0 {
				t.Fatalf("out of range rsrq %d rsrp %d", q, p)
			}
		}
		for _, c := range regCmds {
			for _, read := range []bool{true, false} {
				g, err := parseReg(c, params, read)
				if err != nil {
					continue
				}
				if g.act < -1 || g.act > maxAcT || g.src != c.src ||
					uint64(g.area) >= 1<<(4*c.areaHex) || g.cell >= 1<<36 || (!g.hasLoc && (g.area != 0 || g.cell != 0)) {
					t.Fatalf("%s %q read=%v accepted out of range: %+v", c.prefix, params, read, g)
				}
			}
		}
		if c, err := parseCOPS(params); err == nil {
			if c.act > maxAcT || c.format > kestrel.OperatorNumeric || (c.format == kestrel.OperatorNumeric && !digits(c.oper)) {
				t.Fatalf("+COPS accepted %+v", c)
			}
		}
		for _, p := range []string{"", "+CCID: ", "+ICCID: "} {
			if id, _, err := parseICCID([]string{p + params}); err == nil && id.value != "" {
				if len(id.value) < 19 || len(id.value) > 20 || (!id.invalid && !luhn(id.value)) {
					t.Fatalf("ICCID %+v", id)
				}
			}
		}
		if v, _, err := parseIMEI([]string{params}); err == nil && v != "" && !digits(v) {
			t.Fatalf("IMEI %q", v)
		}
	})
}
