package iio

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func FuzzParseRaw(f *testing.F) {
	for _, s := range []string{"0\n", "-1024\n", "+5", "  17 \n", "1.5\n", "", "\n", "-", "99999999999999999999\n", "1e3", "12\n345\n", "nan"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseRaw(b)
		tok := strings.Fields(string(b))
		if len(tok) == 0 {
			if err == nil {
				t.Fatalf("%q: no error for an empty value", b)
			}
			return
		}
		// The first token, split as the driver splits (space, tab, newline).
		first := strings.FieldsFunc(string(b), func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' })
		if len(first) == 0 {
			return // only other whitespace (\r, \v): ParseFloat decides
		}
		want, werr := strconv.ParseFloat(first[0], 64)
		if (err == nil) != (werr == nil) || err == nil && got != want && !(got != got && want != want) {
			t.Fatalf("%q: got %v, %v; strconv says %v, %v", b, got, err, want, werr)
		}
	})
}

func TestSampleAllocatesNothing(t *testing.T) {
	dir := t.TempDir()
	var ax [3]axis
	for i, v := range []string{"-3\n", "5\n", "1024\n"} {
		p := dir + "/" + strconv.Itoa(i)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		ax[i] = axis{raw: p, scale: 0.009576806}
	}
	a := New(dir, Options{})
	for i := range ax {
		f, err := os.Open(ax[i].raw)
		if err != nil {
			t.Fatal(err)
		}
		ax[i].f, ax[i].fd = f, int(f.Fd())
	}
	defer closeAxes(&ax)
	var buf [32]byte
	if n := testing.AllocsPerRun(100, func() {
		if _, err := a.sample(&ax, &buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("sample allocates %v times", n)
	}
}
