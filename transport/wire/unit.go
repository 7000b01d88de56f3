package wire

// Version 4: speed and track in the receiver's own decimal grid.
//
// NMEA 0183 sends speed over ground in knots and course in degrees, each
// with as many decimals as the receiver prints, and the GPS driver rounds
// them to cm/s and centidegrees. A receiver that prints knots with one
// decimal (0.1 kn = 5.144 cm/s) or none, or degrees with one decimal or
// none, leaves values that are points of a coarser grid; the grid index
// gives the record's value back exactly, and costs log2(5.1) to log2(100)
// bits less per value. Unlike a common divisor, the grid also holds under
// prediction from the positions: the prediction is rounded to the grid
// and the residual counted in grid steps.
//
// Speed units: 0 cm/s; 1 whole knots; 2 tenths of a knot. A knot value n
// in tenths^f is n*185200/(3600*10^f) cm/s rounded half away from zero,
// exactly as the driver (drivers/nmea, knotsToCms) converts the text.
// Track units: 0 centidegrees; 1 tenths of a degree; 2 whole degrees.

const (
	unitNone   = 0
	unitCoarse = 1 // whole knots, tenths of a degree
	unitFine   = 2 // tenths of a knot, whole degrees
	numUnits   = 3 // 3 in the unit field is malformed
)

// knotDen is the denominator of a speed unit: n knots*10^-f is
// n*185200/knotDen cm/s.
func knotDen(unit int) int64 {
	if unit == unitCoarse {
		return 3600
	}
	return 36000
}

// trackStep is a track unit in centidegrees.
func trackStep(unit int) int64 {
	if unit == unitCoarse {
		return 10
	}
	return 100
}

// speedFromUnit returns the speed in cm/s of n in speed unit u (not
// unitNone), rounded half away from zero. It wraps rather than fails for
// values no encoder writes.
func speedFromUnit(n int64, unit int) int64 {
	den := knotDen(unit)
	a := n
	if a < 0 {
		a = -a
	}
	if a > 1<<40 {
		return n // garbage (decoding fuzz): any value, no overflow
	}
	v := (a*185200 + den/2) / den
	if n < 0 {
		return -v
	}
	return v
}

// speedToUnit returns the index of cm/s value v in speed unit u, and
// false when v is not a point of that grid.
func speedToUnit(v int64, unit int) (int64, bool) {
	if v < -1<<35 || v > 1<<35 {
		return 0, false
	}
	den := knotDen(unit)
	a := v
	if a < 0 {
		a = -a
	}
	n := (a*den + 92600) / 185200
	if v < 0 {
		n = -n
	}
	return n, speedFromUnit(n, unit) == v
}

// toUnit returns the column's value in unit, and false when it is not a
// point of the unit's grid.
func toUnit(col int, v uint64, unit int) (uint64, bool) {
	if col == colSpeed {
		n, ok := speedToUnit(int64(v), unit)
		return uint64(n), ok
	}
	s := uint64(trackStep(unit))
	return v / s, v%s == 0
}

// fromUnit is toUnit's inverse.
func fromUnit(col int, v uint64, unit int) uint64 {
	if unit == unitNone {
		return v
	}
	if col == colSpeed {
		return uint64(speedFromUnit(int64(v), unit))
	}
	return v * uint64(trackStep(unit))
}

// chooseUnit returns the coarsest unit whose grid holds every value of
// vals (a speed or track column), and the values in it in dst.
func chooseUnit(dst []uint64, col int, vals []uint64) ([]uint64, int) {
	for unit := numUnits - 1; unit > unitNone; unit-- {
		dst = dst[:0]
		ok := true
		for _, v := range vals {
			u, fits := toUnit(col, v, unit)
			if !fits {
				ok = false
				break
			}
			dst = append(dst, u)
		}
		if ok {
			return dst, unit
		}
	}
	return append(dst[:0], vals...), unitNone
}

// predictionInUnit converts a prediction (cm/s, or centidegrees in
// 0..35999) to unit, rounding half up; a track wraps to the unit's circle.
func predictionInUnit(col int, p int64, unit int) int64 {
	if unit == unitNone {
		return p
	}
	if col == colSpeed {
		// Predictions are never negative (predictSpeed) and below 2^40.
		return (p*knotDen(unit) + 92600) / 185200
	}
	s := trackStep(unit)
	return ((p + s/2) / s) % (36000 / s)
}

// trackCircle is the number of track values in a full turn in unit.
func trackCircle(unit int) int64 {
	if unit == unitNone {
		return 36000
	}
	return 36000 / trackStep(unit)
}
