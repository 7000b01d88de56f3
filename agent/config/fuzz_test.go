package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary documents to the strict decoder, the validator
// and the remote overlay: none may panic, and whatever parses must survive
// Diff, Clone and Get.
func FuzzParse(f *testing.F) {
	f.Add(DefaultsTOML())
	f.Add([]byte(good))
	f.Add([]byte("[gps]\nbaud = \"fast\"\n"))
	f.Add([]byte("[[gpio.lines]]\nname = \"ignition\"\nchip = \"gpiochip0\"\noffset = 4\n"))
	f.Add([]byte("version = 3\n[tracking]\nmax_interval = \"-5s\"\nheading = nan\n"))
	f.Add([]byte("[device\n"))
	f.Add([]byte("[privacy]\nschedule = [\"Mon-Fri 18:00-08:00\", \"Sat,Sun 00:00-24:00\"]\ntime_zone = \"Europe/London\"\n" +
		"[[privacy.zones]]\nname = \"home\"\naction = \"drop\"\npolygon = [[51.5, -0.1], [51.5, -0.099], [51.501, -0.099]]\n"))
	if seeds, _ := filepath.Glob("testdata/*.toml"); len(seeds) > 0 {
		for _, s := range seeds {
			if b, err := os.ReadFile(s); err == nil {
				f.Add(b)
			}
		}
	}
	base, _ := Parse([]byte(good))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil {
			_ = c.Validate()
			d := Clone(c)
			if len(ChangedPaths(c, d)) != 0 {
				t.Fatal("clone differs")
			}
			for _, p := range Paths() {
				if _, err := Get(c, p); err != nil {
					t.Fatal(err)
				}
			}
		} else if len(FieldErrors(err)) == 0 {
			t.Fatal("error without field errors")
		}
		if o, _, err := Overlay(base, data); err == nil {
			_ = o.Validate()
			_ = CheckReload(base, o)
		}
	})
}
