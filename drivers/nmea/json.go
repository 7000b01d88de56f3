package nmea

// AppendJSON appends the fix as one line of `kestrelctl nmea decode`
// output, without the newline:
//
//	{"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}
//
// Values are printed exactly from their fixed-point form (lat/lon to 1e-7
// degrees, alt to the centimetre, speed to the cm/s, track to the
// centidegree); absent ones are null. It allocates only if dst must grow.
func (f *Fix) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"time":"`...)
	dst = appendTime(dst, f.Time)
	dst = append(dst, `","lat":`...)
	dst = appendFixed(dst, int64(f.Pos.Lat), 7)
	dst = append(dst, `,"lon":`...)
	dst = appendFixed(dst, int64(f.Pos.Lon), 7)
	dst = append(dst, `,"alt":`...)
	if f.Pos.Flags&hasAlt != 0 {
		dst = appendFixed(dst, int64(f.Pos.Alt), 2)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"speed":`...)
	if f.Pos.Flags&hasSpeed != 0 {
		dst = appendFixed(dst, int64(f.Pos.Speed), 2)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"track":`...)
	if f.Pos.Flags&hasTrack != 0 {
		dst = appendFixed(dst, int64(f.Pos.Track), 2)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"mode":`...)
	dst = append(dst, '0'+byte(f.Pos.Mode))
	return append(dst, '}')
}

// appendFixed prints v/10^places with trailing fraction zeros trimmed
// (keeping at least one digit after the point).
func appendFixed(dst []byte, v int64, places int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	p := pow10[places]
	dst = appendUint(dst, uint64(v/p))
	frac := v % p
	var b [20]byte
	for i := places - 1; i >= 0; i-- {
		b[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := places
	for n > 1 && b[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, b[:n]...)
}

func appendUint(dst []byte, v uint64) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}

func append2(dst []byte, v int) []byte { return append(dst, byte('0'+v/10), byte('0'+v%10)) }

// appendTime prints ms since the epoch as RFC 3339 UTC with milliseconds.
func appendTime(dst []byte, ms int64) []byte {
	days := ms / 86400000
	rem := ms % 86400000
	if rem < 0 {
		rem += 86400000
		days--
	}
	y, m, d := civilFromDays(days)
	if y < 0 || y > 9999 {
		y = 0
	}
	dst = append2(dst, y/100)
	dst = append2(dst, y%100)
	dst = append(dst, '-')
	dst = append2(dst, m)
	dst = append(dst, '-')
	dst = append2(dst, d)
	dst = append(dst, 'T')
	s := int(rem / 1000)
	dst = append2(dst, s/3600)
	dst = append(dst, ':')
	dst = append2(dst, s/60%60)
	dst = append(dst, ':')
	dst = append2(dst, s%60)
	dst = append(dst, '.')
	msec := int(rem % 1000)
	dst = append(dst, byte('0'+msec/100), byte('0'+msec/10%10), byte('0'+msec%10))
	return append(dst, 'Z')
}
