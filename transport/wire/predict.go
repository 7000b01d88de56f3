package wire

import "math/bits"

// Prediction of speed and track from the positions.
//
// Many trackers (and every track rebuilt from a GPX log) report speed and
// course computed from consecutive positions, so they are almost free to
// send as the difference from what the two fixes imply. A receiver that
// measures them by Doppler gains little, so the encoder uses prediction per
// column only when it makes the column smaller.
//
// Encoder and decoder must compute the same prediction bit for bit on any
// CPU (devices are ARM, the platform is usually amd64, and Go may fuse
// floating point multiply-adds on ARM), so everything here is integer:
// a cosine table with linear interpolation for the east-west scale, and
// CORDIC for bearing and distance. Precision only affects the size of the
// residuals, never correctness.

// cosQ30 is cos(d degrees) * 2^30 for d = 0..90.
var cosQ30 = [91]int64{1073741824, 1073578288, 1073087729, 1072270298, 1071126243, 1069655912, 1067859754, 1065738315, 1063292242, 1060522280, 1057429273, 1054014162, 1050277989, 1046221891, 1041847103, 1037154959, 1032146887, 1026824413, 1021189159, 1015242840, 1008987269, 1002424350, 995556083, 988384560, 980911966, 973140576, 965072759, 956710970, 948057759, 939115760, 929887697, 920376381, 910584710, 900515665, 890172315, 879557810, 868675383, 857528349, 846120104, 834454122, 822533958, 810363241, 797945680, 785285058, 772385229, 759250125, 745883746, 732290163, 718473518, 704438018, 690187940, 675727625, 661061475, 646193961, 631129609, 615873009, 600428808, 584801711, 568996477, 553017922, 536870912, 520560366, 504091252, 487468587, 470697435, 453782903, 436730145, 419544355, 402230767, 384794656, 367241333, 349576144, 331804471, 313931728, 295963357, 277904834, 259761657, 241539355, 223243478, 204879599, 186453311, 167970228, 149435979, 130856211, 112236583, 93582766, 74900443, 56195305, 37473049, 18739379, 0}

// atanNano is atan(2^-i) in 1e-9 degrees, i = 0..23: 24 CORDIC steps
// leave the angle within 4e-6 degrees, far below the 0.01 degree unit.
var atanNano = [...]int64{45000000000, 26565051177, 14036243468, 7125016349, 3576334375, 1789910608, 895173710, 447614171, 223810500, 111905677, 55952892, 27976453, 13988227, 6994114, 3497057, 1748528, 874264, 437132, 218566, 109283, 54642, 27321, 13660, 6830}

// speedMul converts the CORDIC magnitude (gain 1.6467603, scaled by 2^16, in
// 1e-7 degree units of arc on a sphere of radius 6371008.8 m) to cm/s·ms:
// 1.1119508 cm per unit * 1000 / 1.64676 * 2^16, then >> 32.
const speedMul = 44252226

// cosLat returns cos(lat) * 2^30 for lat in 1e-7 degrees.
func cosLat(lat int64) int64 {
	if lat < 0 {
		lat = -lat
	}
	if lat >= 90e7 {
		return 0
	}
	i := lat / 1e7
	f := lat % 1e7
	return cosQ30[i] + (cosQ30[i+1]-cosQ30[i])*f/1e7
}

// bearingDistance returns the bearing from fix a to fix b in centidegrees
// (0..35999) and the CORDIC magnitude of the step, or ok false when the
// fixes coincide.
func bearingDistance(lat1, lon1, lat2, lon2 int64) (track int64, mag uint64, ok bool) {
	dlat := lat2 - lat1
	dlon := lon2 - lon1
	if dlon > 180e7 {
		dlon -= 360e7
	} else if dlon < -180e7 {
		dlon += 360e7
	}
	// Garbage input (decoding fuzz) can hold any int32; keep the
	// arithmetic inside int64: |dlat|, |dlon| < 2^33 after this.
	const lim = 1 << 33
	if dlat >= lim || dlat <= -lim || dlon >= lim || dlon <= -lim {
		return 0, 0, false
	}
	if dlat == 0 && dlon == 0 {
		return 0, 0, false
	}
	x := dlat << 16                  // north
	y := (dlon * cosLat(lat2)) >> 14 // east, the same scale
	var z int64                      // angle in 1e-9 degrees
	if x < 0 {
		x, y = -x, -y
		z = 180e9
	}
	for i, a := range atanNano {
		if y > 0 {
			x, y = x+(y>>i), y-(x>>i)
			z += a
		} else {
			x, y = x-(y>>i), y+(x>>i)
			z -= a
		}
	}
	// Round to centidegrees, half up; z runs from -90e9 to 270e9, so
	// divide by flooring rather than Go's truncation toward zero.
	zz := z + 5e6
	track = zz / 1e7
	if zz%1e7 < 0 {
		track--
	}
	track %= 36000
	if track < 0 {
		track += 36000
	}
	return track, uint64(x), true
}

// predictSpeed returns the speed in cm/s that covers mag in dtMS.
func predictSpeed(mag uint64, dtMS int64) int64 {
	if dtMS <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(mag, speedMul)
	v := hi<<32 | lo>>32 // (mag*speedMul) >> 32; fits: mag < 2^52
	return int64((v + uint64(dtMS)/2) / uint64(dtMS))
}

// A step is what fixes i-1 and i imply: the bearing (centidegrees) and
// CORDIC magnitude between them, ok false when they coincide. Speed and
// track use the same steps, so a batch computes them once (stepsOf).
type step struct {
	track int64
	mag   uint64
	ok    bool
}

// stepsOf fills dst with the step into each fix (dst[0] is unused).
func stepsOf(dst []step, lat, lon []uint64) []step {
	n := min(len(lat), len(lon))
	dst = append(dst[:0], make([]step, n)...)
	for i := 1; i < n; i++ {
		tr, mag, ok := bearingDistance(int64(int32(lat[i-1])), int64(int32(lon[i-1])), int64(int32(lat[i])), int64(int32(lon[i])))
		dst[i] = step{tr, mag, ok}
	}
	return dst
}

// predictAt is the prediction for fix i of the speed (col == colSpeed) or
// track column, from the step into fix i (steps from stepsOf). prevTrack
// is the last track value before fix i in the batch (0 if none): a track
// cannot be predicted when the fixes coincide, and a receiver then keeps
// its last course.
func predictAt(col, i int, steps []step, tm []uint64, prevTrack int64) int64 {
	if i == 0 || i >= len(steps) || i >= len(tm) {
		if col == colTrack {
			return prevTrack
		}
		return 0
	}
	st := steps[i]
	if col == colTrack {
		if !st.ok {
			return prevTrack
		}
		return st.track
	}
	if !st.ok {
		return 0
	}
	return predictSpeed(st.mag, int64(tm[i]-tm[i-1]))
}

// wrapTrack maps a track difference into [-18000, 18000) centidegrees.
func wrapTrack(r int64) int64 {
	r %= 36000
	if r >= 18000 {
		r -= 36000
	} else if r < -18000 {
		r += 36000
	}
	return r
}

// predictColumn fills dst with vals (the present values of col, gated by
// flag in flags) minus their predictions. ok is false when the column
// holds a value that the track residual cannot carry (36000 and above).
func predictColumn(dst []uint64, col int, vals, flags []uint64, flag uint64, steps []step, tm []uint64) (out []uint64, ok bool) {
	dst = dst[:0]
	var prevTrack int64
	j := 0
	for i := range flags {
		if flags[i]&flag == 0 {
			continue
		}
		v := vals[j]
		j++
		p := predictAt(col, i, steps, tm, prevTrack)
		if col == colTrack {
			if v >= 36000 {
				return dst, false
			}
			dst = append(dst, uint64(wrapTrack(int64(v)-p)))
			prevTrack = int64(v)
		} else {
			dst = append(dst, v-uint64(p))
		}
	}
	return dst, true
}

// unpredictColumn turns residuals back into values, in place.
func unpredictColumn(res []uint64, col int, flags []uint64, flag uint64, steps []step, tm []uint64) {
	var prevTrack int64
	j := 0
	for i := range flags {
		if flags[i]&flag == 0 {
			continue
		}
		if j >= len(res) {
			return
		}
		p := predictAt(col, i, steps, tm, prevTrack)
		if col == colTrack {
			v := (p + int64(res[j])%36000) % 36000
			if v < 0 {
				v += 36000
			}
			res[j] = uint64(v)
			prevTrack = v
		} else {
			res[j] += uint64(p)
		}
		j++
	}
}
