package radio

import (
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
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
	}
	for _, c := range cases {
		q, p, ok := parseCESQ(c.in)
		if !ok || q != c.rsrq || p != c.rsrp {
			t.Errorf("parseCESQ(%q) = %d, %d, %v; want %d, %d", c.in, q, p, ok, c.rsrq, c.rsrp)
		}
	}
}

func TestRegistration(t *testing.T) {
	g, ok := parseCEREG(`2,1,"00C3","0A1B2C3D",7`, true)
	if !ok || g.state != kestrel.RegHome || g.area != 0xC3 || g.cell != 0x0A1B2C3D || g.act != 7 {
		t.Fatalf("read: %+v %v", g, ok)
	}
	g, ok = parseCEREG(`5,"00C4","0A1B2C99",7,,,"00100100","01000011"`, false)
	if !ok || g.state != kestrel.RegRoaming || g.cell != 0x0A1B2C99 {
		t.Fatalf("URC with PSM fields: %+v %v", g, ok)
	}
	g, ok = parseCEREG(`2`, false)
	if !ok || g.state != kestrel.RegSearching || g.hasLoc {
		t.Fatalf("bare URC: %+v", g)
	}
	if _, ok := parseCEREG(`2`, true); ok {
		t.Fatal("read response without <stat> accepted")
	}
	g, ok = parseCREGTetra("1,1001,23426", false)
	if !ok || g.state != kestrel.RegHome || g.area != 1001 || g.net != "23426" {
		t.Fatalf("TETRA URC: %+v", g)
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
		parseCREGTetra(params, true)
		parseCREGTetra(params, false)
		tetraMode(params)
		parseIdentity([]string{"+CTGS: " + params, data}, "1")
	})
}

func FuzzLTE(f *testing.F) {
	f.Add(`2,1,"00C3","0A1B2C3D",7`)
	f.Add(`99,99,255,255,20,45`)
	f.Add(`0,0,"EE",7`)
	f.Add(`20,99`)
	f.Add(`"unterminated`)
	f.Fuzz(func(t *testing.T, params string) {
		parseCSQ(params)
		if q, p, ok := parseCESQ(params); ok {
			if q < -200 || q > 0 || p < -141 || p > 0 {
				t.Fatalf("out of range rsrq %d rsrp %d", q, p)
			}
		}
		parseCEREG(params, true)
		parseCEREG(params, false)
		parseCOPS(params)
		bareValue([]string{params})
	})
}
