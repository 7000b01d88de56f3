package config

import "testing"

func TestParseMounting(t *testing.T) {
	for _, ok := range []string{"+x,+y,+z", "-y,+x,+z", "+y,-x,+z", "+z,+y,-x", " -x , -y , +z "} {
		if _, err := ParseMounting(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "+x,+y", "+x,+x,+z", "x,y,z", "+x,+y,-z", "+a,+y,+z", "+x,+y,+z,+x"} {
		if _, err := ParseMounting(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	m, _ := ParseMounting("-y,+x,+z")
	if m[0] != (Axis{Index: 1, Sign: -1}) || m[1] != (Axis{Index: 0, Sign: 1}) {
		t.Fatalf("got %+v", m)
	}
}
