package offduty

import (
	"errors"
	"fmt"
	"math"
)

// Bounds on zones.
const (
	MaxZones    = 64
	MaxVertices = 256
	MaxNameLen  = 64
	// MaxExtent is the largest span of a zone in degrees of latitude and
	// of longitude (about 111 km north-south). A zone across the
	// antimeridian spans nearly 360° of longitude and is refused: split it.
	MaxExtent = 1.0
)

// Zone actions.
const (
	ActionDrop   = "drop"   // positions inside are dropped (as privacy "pause")
	ActionCoarse = "coarse" // positions inside are coarsened (as privacy "coarse")
)

// Zone is a named polygon with an action.
//
// Containment is the even-odd crossing test (W. R. Franklin's PNPOLY) on
// latitude and longitude taken as plane coordinates, in exact integer
// arithmetic on 1e-7 degree units, the record's own resolution. Edges are
// therefore straight lines in latitude and longitude, not geodesics; at
// MaxExtent the two differ by at most a few metres (a 1 km edge: under a
// millimetre), well inside a GPS fix's error. A self-intersecting polygon
// gets the even-odd reading; a point on an edge falls on one side
// consistently.
type Zone struct {
	Name                           string
	Action                         string
	lat                            []int64 // 1e-7 degrees
	lon                            []int64
	minLat, maxLat, minLon, maxLon int64
}

// NewZone checks and builds a zone. polygon holds [lat, lon] pairs in
// decimal degrees (WGS 84); the ring closes itself (repeating the first
// vertex at the end is allowed).
func NewZone(name, action string, polygon [][]float64) (*Zone, error) {
	if name == "" || len(name) > MaxNameLen {
		return nil, fmt.Errorf("name: want 1 to %d bytes", MaxNameLen)
	}
	if action != ActionDrop && action != ActionCoarse {
		return nil, fmt.Errorf("action: want %q or %q, got %q", ActionDrop, ActionCoarse, trunc(action))
	}
	n := len(polygon)
	if n > 1 && slicesEqual(polygon[0], polygon[n-1]) {
		n-- // closed ring written out
	}
	if n < 3 || n > MaxVertices {
		return nil, fmt.Errorf("polygon: want 3 to %d vertices, got %d", MaxVertices, n)
	}
	z := &Zone{Name: name, Action: action, lat: make([]int64, n), lon: make([]int64, n),
		minLat: math.MaxInt64, maxLat: math.MinInt64, minLon: math.MaxInt64, maxLon: math.MinInt64}
	for i, v := range polygon[:n] {
		if len(v) != 2 {
			return nil, fmt.Errorf("polygon[%d]: want [lat, lon], got %d numbers", i, len(v))
		}
		lat, lon := v[0], v[1]
		if !(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180) {
			return nil, fmt.Errorf("polygon[%d]: [%g, %g] is not a latitude and longitude", i, lat, lon)
		}
		z.lat[i], z.lon[i] = int64(math.Round(lat*1e7)), int64(math.Round(lon*1e7))
		z.minLat, z.maxLat = min(z.minLat, z.lat[i]), max(z.maxLat, z.lat[i])
		z.minLon, z.maxLon = min(z.minLon, z.lon[i]), max(z.maxLon, z.lon[i])
	}
	if z.maxLat-z.minLat > MaxExtent*1e7 || z.maxLon-z.minLon > MaxExtent*1e7 {
		return nil, fmt.Errorf("polygon: spans %.3g° of latitude and %.3g° of longitude, at most %g° each (split a zone across the antimeridian)",
			float64(z.maxLat-z.minLat)/1e7, float64(z.maxLon-z.minLon)/1e7, MaxExtent)
	}
	if z.maxLat == z.minLat || z.maxLon == z.minLon {
		return nil, errors.New("polygon: has no area")
	}
	return z, nil
}

func slicesEqual(a, b []float64) bool {
	return len(a) == 2 && len(b) == 2 && a[0] == b[0] && a[1] == b[1]
}

// Contains reports whether the point (1e-7 degrees) is inside the zone.
func (z *Zone) Contains(lat, lon int32) bool {
	py, px := int64(lat), int64(lon)
	if py < z.minLat || py > z.maxLat || px < z.minLon || px > z.maxLon {
		return false
	}
	// Inside the box every difference is within MaxExtent (1e7 units),
	// so the products below stay under 1e14: exact in int64.
	in := false
	n := len(z.lat)
	for i, j := 0, n-1; i < n; j, i = i, i+1 {
		yi, yj, xi, xj := z.lat[i], z.lat[j], z.lon[i], z.lon[j]
		if (yi > py) == (yj > py) {
			continue
		}
		// px < xi + (py-yi)(xj-xi)/(yj-yi), without dividing.
		l, r := (px-xi)*(yj-yi), (py-yi)*(xj-xi)
		if yj-yi < 0 {
			l, r = -l, -r
		}
		if l < r {
			in = !in
		}
	}
	return in
}
