package nmea

import kestrel "github.com/kestrel-edge/kestrel"

// Field parsers. They work on the bytes of one field, never allocate, and
// keep values in fixed point so that a fix survives encoding bit for bit.

// maxFrac bounds the fraction digits kept; more would overflow int64 in the
// conversions below and carry no information (1e-10 minutes is 0.2 µm).
const maxFrac = 10

const (
	hasAlt   = kestrel.HasAlt
	hasSpeed = kestrel.HasSpeed
	hasTrack = kestrel.HasTrack
)

var pow10 = [...]int64{1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18}

// decimal parses "[+-]ddd[.ddd]" as mant/10^frac. Extra fraction digits are
// dropped. Like gpsd's safe_atof, leading blanks and trailing bytes after
// the number are ignored, and a field without digits is not a number (NaN
// to gpsd, which then treats the value as absent).
func decimal(b []byte) (mant int64, frac int, ok bool) {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	digits := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if mant > 1e15 {
			return 0, 0, false
		}
		mant = mant*10 + int64(b[i]-'0')
		digits++
	}
	if i < len(b) && b[i] == '.' {
		i++
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			digits++
			if frac < maxFrac && mant < 1e16 {
				mant = mant*10 + int64(b[i]-'0')
				frac++
			}
		}
	}
	if digits == 0 || (i < len(b) && (b[i] == 'e' || b[i] == 'E')) {
		// no number, or an exponent this parser does not scale
		return 0, 0, false
	}
	if neg {
		mant = -mant
	}
	return mant, frac, true
}

// scaled converts a decimal field to an integer in units of 10^-places,
// rounding half away from zero.
func scaled(b []byte, places int) (int64, bool) {
	m, f, ok := decimal(b)
	if !ok {
		return 0, false
	}
	return rescale(m, f, places), true
}

func rescale(m int64, f, places int) int64 {
	switch {
	case f == places:
		return m
	case f < places:
		return m * pow10[places-f]
	}
	d := pow10[f-places]
	if m < 0 {
		return -((-m + d/2) / d)
	}
	return (m + d/2) / d
}

// atoi behaves like C atoi: optional sign, leading digits, junk ignored,
// 0 when there are no digits.
func atoi(b []byte) int {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	n := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if n < 1e8 {
			n = n*10 + int(b[i]-'0')
		}
	}
	if neg {
		return -n
	}
	return n
}

// latlon decodes "DDDMM.mmmm" with its hemisphere into 1e-7 degrees. Like
// gpsd, the field must contain a decimal point; the hemisphere only negates
// on S or W.
func latlon(f, hemi []byte) (int64, bool) {
	if len(f) == 0 || len(hemi) == 0 {
		return 0, false
	}
	i := 0
	neg := false
	if f[0] == '-' || f[0] == '+' {
		neg = f[0] == '-'
		i++
	}
	var whole int64
	nd := 0
	for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
		if whole > 1e9 {
			return 0, false
		}
		whole = whole*10 + int64(f[i]-'0')
		nd++
	}
	if i >= len(f) || f[i] != '.' {
		return 0, false
	}
	i++
	var fr int64
	nf := 0
	for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
		if nf < 7 {
			fr = fr*10 + int64(f[i]-'0')
			nf++
		}
	}
	// Like gpsd (strtol, then atof of the rest), bytes after the number
	// are ignored.
	if neg {
		whole = -whole
	}
	deg := whole / 100
	minutes := whole - deg*40 // whole minutes, degrees folded in
	// value in minutes = minutes + fr/10^nf; degrees = that / 60.
	// Work in 1e-7 minutes (nf <= 7) then divide by 60 with rounding.
	var num int64
	if neg {
		num = minutes*1e7 - fr*pow10[7-nf]
	} else {
		num = minutes*1e7 + fr*pow10[7-nf]
	}
	var v int64
	if num < 0 {
		v = -((-num + 30) / 60)
	} else {
		v = (num + 30) / 60
	}
	if hemi[0] == 'S' || hemi[0] == 'W' {
		v = -v
	}
	return v, true
}

// knotsToCms converts a speed in knots to cm/s (1 kn = 1852/3600 m/s).
func knotsToCms(b []byte) (int64, bool) {
	m, f, ok := decimal(b)
	if !ok {
		return 0, false
	}
	if f > 6 {
		m = rescale(m, f, 6)
		f = 6
	}
	if m > 1e12 || m < -1e12 {
		return 0, false
	}
	num := m * 185200
	den := 3600 * pow10[f]
	if num < 0 {
		return -((-num + den/2) / den), true
	}
	return (num + den/2) / den, true
}

// hhmmssOK reports whether the first six bytes are digits, as gpsd demands.
func hhmmssOK(b []byte) bool {
	if len(b) < 6 {
		return false
	}
	for _, c := range b[:6] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func dd(b []byte) int { return int(b[0]-'0')*10 + int(b[1]-'0') }

// daysFromCivil is the number of days from 1970-01-01 to y-m-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm). d may exceed
// the month's length; the overflow carries into the next month.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + 1 - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468 + int64(d-1)
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	yy := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		yy++
	}
	return int(yy), m, d
}
