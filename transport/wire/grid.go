package wire

// The receiver's grid. NMEA 0183 sends latitude and longitude as degrees
// and decimal minutes, ddmm.mmmm, with a number of minute decimals k fixed
// by the receiver. A record holds the angle rounded to 1e-7 degrees; for
// k <= 5 one step of the receiver's grid (1e-k minutes = 1/(6*10^(k+1))
// degrees) is more than 1e-7 degrees, so the 1e-7 value determines the
// grid point, and the column can travel as whole grid steps: a step of
// 1e-4 minutes is 16.7 units of 1e-7 degrees, 4 bits saved per value.
//
// Grid k (k = 0..5): g = ±(dd*60*10^k + u), where the angle is ±dd degrees
// and u*10^-k minutes (0 <= u < 60*10^k); the angle in 1e-7 degrees is
// ±(dd*10^7 + round(u*10^7 / (60*10^k))). The quotient is a multiple of
// 1/3 and never a tie, so the rounding is unambiguous.

const gridNone = 0 // the column holds 1e-7 degrees; 1+k: grid k

const maxGridK = 5

var gridScale = [maxGridK + 1]int64{60, 600, 6000, 60000, 600000, 6000000}

// fromGrid returns the angle in 1e-7 degrees of grid value g in grid k.
// It wraps rather than fails for values no encoder writes.
func fromGrid(g int64, k int) int64 {
	s := gridScale[k]
	a := uint64(g)
	if g < 0 {
		a = -a
	}
	dd, u := a/uint64(s), a%uint64(s)
	v := dd*1e7 + (2*u*1e7+uint64(s))/(2*uint64(s))
	if g < 0 {
		return -int64(v)
	}
	return int64(v)
}

// toGrid returns the grid value of v (1e-7 degrees) in grid k, and false
// when v is not a point of that grid.
func toGrid(v int64, k int) (int64, bool) {
	if v < -1<<40 || v > 1<<40 {
		return 0, false
	}
	s := gridScale[k]
	a := v
	if a < 0 {
		a = -a
	}
	dd, rem := a/1e7, a%1e7
	u := (rem*s + 5e6) / 1e7
	if u >= s {
		return 0, false
	}
	g := dd*s + u
	if v < 0 {
		g = -g
	}
	if fromGrid(g, k) != v {
		return 0, false
	}
	return g, true
}

// chooseGrid returns the coarsest grid that holds every value of vals
// (angles in 1e-7 degrees, sign-extended), or gridNone, and leaves the
// grid values in dst.
func chooseGrid(dst, vals []uint64) ([]uint64, int) {
	for k := 0; k <= maxGridK; k++ {
		dst = dst[:0]
		ok := true
		for _, v := range vals {
			g, fits := toGrid(int64(v), k)
			if !fits {
				ok = false
				break
			}
			dst = append(dst, uint64(g))
		}
		if ok {
			return dst, 1 + k
		}
	}
	return dst[:0], gridNone
}
