package config

import (
	"fmt"
	"strings"
)

// Axis is one vehicle axis as a sensor axis: Index 0, 1 or 2 (x, y, z)
// and Sign +1 or -1.
type Axis struct {
	Index int
	Sign  float64
}

// ParseMounting reads motion.mounting: three signed sensor axes, comma
// separated, that point along the vehicle's forward, left and up axes
// ("+x,+y,+z"). Each sensor axis is used once, and the three must make a
// right-handed frame (forward × left = up), as a real part mounted any way
// round does: a mirrored frame is a typing error.
func ParseMounting(s string) ([3]Axis, error) {
	var m [3]Axis
	parts := strings.Split(strings.ReplaceAll(s, " ", ""), ",")
	if len(parts) != 3 {
		return m, fmt.Errorf("want three signed axes such as \"+x,+y,+z\", got %q", s)
	}
	used := [3]bool{}
	for i, p := range parts {
		if len(p) != 2 || (p[0] != '+' && p[0] != '-') || p[1] < 'x' || p[1] > 'z' {
			return m, fmt.Errorf("axis %q: want +x, -x, +y, -y, +z or -z", p)
		}
		idx := int(p[1] - 'x')
		if used[idx] {
			return m, fmt.Errorf("axis %c used twice in %q", p[1], s)
		}
		used[idx] = true
		m[i] = Axis{Index: idx, Sign: 1}
		if p[0] == '-' {
			m[i].Sign = -1
		}
	}
	// forward × left must equal up: build unit vectors and check.
	var v [3][3]float64
	for i, a := range m {
		v[i][a.Index] = a.Sign
	}
	f, l, u := v[0], v[1], v[2]
	cross := [3]float64{f[1]*l[2] - f[2]*l[1], f[2]*l[0] - f[0]*l[2], f[0]*l[1] - f[1]*l[0]}
	if cross != u {
		return m, fmt.Errorf("%q is a mirrored frame: forward × left must point up", s)
	}
	return m, nil
}
