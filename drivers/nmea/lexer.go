package nmea

import (
	"bytes"
	"strings"
)

// Framing, after gpsd's packet lexer: a sentence starts at '$' (or '!' for
// AIS encapsulation), runs over printable ASCII and ends at CR or LF (any
// mix: CR LF, LF, LF CR, CR CR LF). It must end in "*hh", a two-digit hex
// XOR checksum of the bytes between '$' and '*'. Everything else is noise:
// bytes before a '$' are counted and dropped, a '$' inside a sentence
// starts over (the first one was truncated or spliced), a control or 8-bit
// byte inside one ends it, and a line longer than maxSentence is dropped.
// Lines starting with '#' are comments; "# Date: YYYY-MM-DD" sets the date
// hint, as gpsd's regression logs use it.

// maxSentence is the longest sentence accepted, '$' to checksum. NMEA 0183
// says 82 with CR LF; real receivers go past that (Trimble GGA 91, Skytraq
// PSTI 103, Inertial Sense 119), and gpsd's NMEA_MAX is 130.
const maxSentence = 130

// maxFields bounds the fields of one sentence (gpsd's NMEA_MAX_FLD).
const maxFields = 100

const (
	stGround = iota
	stBody
	stSkip    // over-long or broken: drop to end of line
	stComment // '#' line
)

// Write feeds bytes from the receiver. It never fails: bad input is counted
// in Stats and skipped. Completed fixes are queued for Next.
func (d *Decoder) Write(p []byte) (int, error) {
	rest := p
	for len(rest) > 0 {
		if d.cookie == 0 {
			rest = rest[d.write(rest):]
			continue
		}
		// gpsfake's delay cookie marks write boundaries in regression
		// logs; it is not data.
		k := bytes.IndexByte(rest, d.cookie)
		if k < 0 {
			k = len(rest)
		}
		used := d.write(rest[:k])
		if used < k {
			rest = rest[used:]
			continue
		}
		if k < len(rest) {
			k++
		}
		rest = rest[k:]
	}
	return len(p), nil
}

// write consumes p, or stops early (returning how far it got) when a
// comment line has just set a delay cookie.
func (d *Decoder) write(p []byte) int {
	i := 0
	for i < len(p) {
		switch d.st {
		case stGround:
			// Fast path: scan for the start of a sentence.
			for i < len(p) {
				c := p[i]
				if c == '$' || c == '!' {
					d.buf[0] = c
					d.n = 1
					d.st = stBody
					i++
					break
				}
				i++
				switch {
				case c == '\n' || c == '\r':
					d.lineStart = true
				case c == '#' && d.lineStart:
					d.st = stComment
					d.cn = 0
					d.lineStart = false
				default:
					d.lineStart = false
					d.stats.NoiseBytes++
				}
				if d.st != stGround {
					break
				}
			}
		case stBody:
			n := d.n
			buf := &d.buf
			for i < len(p) {
				c := p[i]
				if c >= 0x20 && c <= 0x7e && c != '$' {
					if n >= maxSentence {
						d.stats.Overlong++
						d.st = stSkip
						break
					}
					buf[n] = c
					n++
					i++
					continue
				}
				switch c {
				case '\r', '\n':
					i++
					d.n = n
					d.st = stGround
					d.lineStart = true
					d.sentence(buf[:n])
				case '$':
					// A new sentence before this one ended: it was cut.
					d.stats.Truncated++
					d.stats.NoiseBytes += uint64(n)
					buf[0] = c
					n = 1
					i++
					continue
				default:
					// Binary inside a sentence: it is garbage.
					d.stats.Framing++
					d.stats.NoiseBytes += uint64(n) + 1
					d.st = stSkip
					i++
				}
				break
			}
			if d.st == stBody {
				d.n = n
			}
		case stSkip:
			for i < len(p) {
				c := p[i]
				if c == '\n' || c == '\r' {
					d.st = stGround
					d.lineStart = true
					i++
					break
				}
				if c == '$' {
					d.st = stGround
					break
				}
				d.stats.NoiseBytes++
				i++
			}
		case stComment:
			for i < len(p) {
				c := p[i]
				i++
				if c == '\n' || c == '\r' {
					d.st = stGround
					d.lineStart = true
					prev := d.cookie
					d.comment(d.cbuf[:d.cn])
					if d.cookie != prev {
						return i
					}
					break
				}
				if d.cn < len(d.cbuf) {
					d.cbuf[d.cn] = c
					d.cn++
				}
			}
		}
	}
	return i
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// sentence checks one framed line "$....*hh" and hands its body on.
func (d *Decoder) sentence(s []byte) {
	n := len(s)
	if n < 4 || s[n-3] != '*' {
		d.stats.NoChecksum++
		return
	}
	hi, ok1 := unhex(s[n-2])
	lo, ok2 := unhex(s[n-1])
	if !ok1 || !ok2 {
		d.stats.BadChecksum++
		return
	}
	var cs byte
	for _, c := range s[1 : n-3] {
		cs ^= c
	}
	if cs != hi<<4|lo {
		d.stats.BadChecksum++
		return
	}
	d.stats.Sentences++
	if s[0] == '!' {
		// AIS and other encapsulated sentences carry no fix.
		d.stats.Ignored++
		return
	}
	d.dispatch(s[1 : n-3])
}

// comment handles a '#' line: "# Date: YYYY-MM-DD" dates the log and
// "# Delay-Cookie: C ..." names a byte to drop from the data.
func (d *Decoder) comment(c []byte) {
	const dc = " Delay-Cookie:"
	if len(c) > len(dc) && string(c[:len(dc)]) == dc {
		for _, ch := range c[len(dc):] {
			if ch != ' ' && ch != '\t' {
				// Only punctuation that NMEA does not use can be a cookie.
				if d.cookie == 0 && strings.IndexByte("|~^`@%&", ch) >= 0 {
					d.cookie = ch
				}
				break
			}
		}
		return
	}
	const p = " Date:"
	if len(c) < len(p) || string(c[:len(p)]) != p {
		return
	}
	c = c[len(p):]
	for len(c) > 0 && c[0] == ' ' {
		c = c[1:]
	}
	y, m, dd, ok := parseISODate(c)
	if !ok {
		return
	}
	d.setDateHint(y, m, dd)
}

// parseISODate reads YYYY-M-D (gpsd's logs also write 2020-2-1).
func parseISODate(c []byte) (y, m, d int, ok bool) {
	var parts [3]int
	k := 0
	digits := 0
	for _, ch := range c {
		switch {
		case ch >= '0' && ch <= '9':
			parts[k] = parts[k]*10 + int(ch-'0')
			digits++
			if digits > 4 {
				return 0, 0, 0, false
			}
		case ch == '-' && k < 2 && digits > 0:
			k++
			digits = 0
		default:
			if k == 2 && digits > 0 {
				goto done
			}
			return 0, 0, 0, false
		}
	}
done:
	if k != 2 || digits == 0 {
		return 0, 0, 0, false
	}
	y, m, d = parts[0], parts[1], parts[2]
	if y < 1980 || y > 2200 || m < 1 || m > 12 || d < 1 || d > 31 {
		return 0, 0, 0, false
	}
	return y, m, d, true
}
