package iio

import "testing"

// FuzzScanType: any in_*_type text parses or is refused with an error,
// and a parsed type decodes any storage bytes without panicking, within
// its declared bits.
func FuzzScanType(f *testing.F) {
	for _, s := range []string{"le:s12/16>>4", "be:s14/16>>2", "le:s64/64>>0", "le:u8/8>>0",
		"be:u24/32>>8", "le:s16/16X2>>0", "le:s17/16>>0", "xx:s12/16>>4", "le:s0/16>>0", "le:s12/16>>-1", ""} {
		f.Add(s, []byte{0xff, 0x80, 0x01, 0x7f, 0, 0, 0, 0x80})
	}
	f.Fuzz(func(t *testing.T, s string, b []byte) {
		st, err := parseScanType(s)
		if err != nil {
			return
		}
		buf := make([]byte, 8)
		copy(buf, b)
		v := st.value(buf)
		if st.bits < 64 {
			lim := int64(1) << uint(st.bits)
			if st.signed && (v < -lim/2 || v >= lim/2) || !st.signed && (v < 0 || v >= lim) {
				t.Fatalf("%q: value %d outside %d bits", s, v, st.bits)
			}
		}
	})
}

func TestScanTypeExamples(t *testing.T) {
	st, err := parseScanType("le:s12/16>>4")
	if err != nil || st.value([]byte{0xf0, 0xff}) != -1 || st.value([]byte{0x00, 0x80}) != -2048 {
		t.Fatalf("%+v %v", st, err)
	}
	st, _ = parseScanType("be:u10/16>>6")
	if v := st.value([]byte{0xff, 0xc0}); v != 1023 {
		t.Fatalf("got %d", v)
	}
	if _, err := parseScanType("le:s16/16X3>>0"); err == nil {
		t.Fatal("repeat accepted")
	}
}
