package wire

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	kestrel "github.com/kestrel-edge/kestrel"
)

// JSON renderings follow DESIGN.md's command-line contract. Numbers are
// printed from the fixed-point record exactly (no float conversion), with
// trailing zeros trimmed but at least one decimal: lat/lon to 1e-7 degrees,
// alt to 0.01 m, speed to 0.01 m/s, track to 0.01 degrees.

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// AppendFixJSON appends a fix in the `kestrelctl nmea decode` format (one
// object, no newline):
//
//	{"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}
//
// t is the fix time in ms since the Unix epoch. alt, speed and track are
// null when their Has* flag is clear.
func AppendFixJSON(dst []byte, t int64, p *kestrel.Position) []byte {
	dst = append(dst, `{"time":`...)
	dst = appendTime(dst, t)
	dst = appendFixFields(dst, p)
	return append(dst, '}')
}

func appendTime(dst []byte, t int64) []byte {
	dst = append(dst, '"')
	dst = time.UnixMilli(t).UTC().AppendFormat(dst, timeLayout)
	return append(dst, '"')
}

// appendFixFields appends ,"lat":...,"mode":N (the nmea decode fields).
func appendFixFields(dst []byte, p *kestrel.Position) []byte {
	dst = append(dst, `,"lat":`...)
	dst = appendFixed(dst, int64(p.Lat), 7)
	dst = append(dst, `,"lon":`...)
	dst = appendFixed(dst, int64(p.Lon), 7)
	dst = append(dst, `,"alt":`...)
	dst = appendOpt(dst, p.Flags&kestrel.HasAlt != 0, int64(p.Alt), 2)
	dst = append(dst, `,"speed":`...)
	dst = appendOpt(dst, p.Flags&kestrel.HasSpeed != 0, int64(p.Speed), 2)
	dst = append(dst, `,"track":`...)
	dst = appendOpt(dst, p.Flags&kestrel.HasTrack != 0, int64(p.Track), 2)
	dst = append(dst, `,"mode":`...)
	return strconv.AppendUint(dst, uint64(p.Mode), 10)
}

func appendOpt(dst []byte, ok bool, v int64, scale int) []byte {
	if !ok {
		return append(dst, "null"...)
	}
	return appendFixed(dst, v, scale)
}

// appendFixed appends v/10^scale as a decimal with at least one digit
// after the point and no trailing zeros beyond it.
func appendFixed(dst []byte, v int64, scale int) []byte {
	u := uint64(v)
	if v < 0 {
		dst = append(dst, '-')
		u = uint64(-v) // wraps correctly for MinInt64
	}
	var pow uint64 = 1
	for i := 0; i < scale; i++ {
		pow *= 10
	}
	dst = strconv.AppendUint(dst, u/pow, 10)
	dst = append(dst, '.')
	frac := u % pow
	if frac == 0 || scale == 0 {
		return append(dst, '0')
	}
	var buf [20]byte
	n := scale
	for i := n - 1; i >= 0; i-- {
		buf[i] = byte('0' + frac%10)
		frac /= 10
	}
	for n > 1 && buf[n-1] == '0' {
		n--
	}
	return append(dst, buf[:n]...)
}

// AppendJSON appends one record as a JSON object (no newline):
// kind, device, boot, seq, time, the kind's own fields, then priority.
// Positions carry the nmea decode fields, plus sats, hdop, eph, epv and
// coarsened when the record has them.
func AppendJSON(dst []byte, r *kestrel.Record) []byte {
	dst = append(dst, `{"kind":`...)
	dst = appendString(dst, r.Kind().String())
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, r.Device)
	dst = append(dst, `,"boot":`...)
	dst = strconv.AppendUint(dst, uint64(r.Boot), 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"time":`...)
	dst = appendTime(dst, r.Time)
	switch b := r.Body.(type) {
	case *kestrel.Position:
		if b != nil {
			dst = appendFixFields(dst, b)
			if b.Flags&kestrel.HasSats != 0 {
				dst = appendUintField(dst, "sats", uint64(b.Sats))
			}
			if b.Flags&kestrel.HasHDOP != 0 {
				dst = appendFixedField(dst, "hdop", int64(b.HDOP), 2)
			}
			if b.Flags&kestrel.HasEPH != 0 {
				dst = appendFixedField(dst, "eph", int64(b.EPH), 2)
			}
			if b.Flags&kestrel.HasEPV != 0 {
				dst = appendFixedField(dst, "epv", int64(b.EPV), 2)
			}
			if b.Coarsened != 0 {
				dst = appendUintField(dst, "coarsened", uint64(b.Coarsened))
			}
		}
	case *kestrel.GPSStatus:
		if b != nil {
			dst = appendStringField(dst, "state", b.State.String())
			dst = appendUintField(dst, "mode", uint64(b.Mode))
			dst = appendUintField(dst, "sats_in_view", uint64(b.SatsInView))
			dst = appendUintField(dst, "sats_used", uint64(b.SatsUsed))
			dst = appendDOP(dst, "pdop", b.PDOP)
			dst = appendDOP(dst, "hdop", b.HDOP)
			dst = appendDOP(dst, "vdop", b.VDOP)
			dst = appendUintField(dst, "sentences", b.Sentences)
			dst = appendUintField(dst, "bad_frames", b.BadFrames)
			dst = appendUintField(dst, "noise_bytes", b.NoiseBytes)
		}
	case *kestrel.RadioStatus:
		if b != nil {
			dst = appendStringField(dst, "profile", b.Profile.String())
			dst = appendUintField(dst, "registered", uint64(b.Registered))
			dst = appendStringField(dst, "reg_state", b.Registered.String())
			dst = appendStringField(dst, "reg_source", b.RegSource.String())
			dst = append(dst, `,"online":`...)
			dst = strconv.AppendBool(dst, b.Online)
			dst = appendIntField(dst, "rssi", int64(b.RSSI))
			dst = appendUintField(dst, "ber", uint64(b.BER))
			// Each profile prints its own fields: zeros for the
			// other's read as measurements.
			tetra, lte := b.Profile != kestrel.ProfileLTE, b.Profile != kestrel.ProfileTETRA
			if lte {
				dst = appendIntField(dst, "rsrp", int64(b.RSRP))
				dst = appendFixedField(dst, "rsrq", int64(b.RSRQ), 1)
			}
			if tetra {
				dst = appendUintField(dst, "tetra_mode", uint64(b.Mode))
				dst = appendStringField(dst, "identity", b.Identity)
				dst = appendStringField(dst, "talkgroup", b.Talkgroup)
			}
			if lte {
				dst = appendStringField(dst, "operator", b.Operator)
				dst = appendStringField(dst, "operator_format", b.OperatorFormat.String())
				if b.AccessTech == kestrel.AccessTechUnknown {
					dst = append(dst, `,"access_tech":null`...)
				} else {
					dst = appendUintField(dst, "access_tech", uint64(b.AccessTech))
				}
				dst = appendUintField(dst, "tac", uint64(b.TAC))
				dst = appendUintField(dst, "cell_id", uint64(b.CellID))
				dst = appendStringField(dst, "imei", b.IMEI)
				dst = appendStringField(dst, "iccid", b.ICCID)
				dst = append(dst, `,"iccid_invalid":`...)
				dst = strconv.AppendBool(dst, b.ICCIDInvalid)
			}
			dst = appendUintField(dst, "rejected_lines", b.RejectedLines)
		}
	case *kestrel.Accel:
		if b != nil { // m/s², from mm/s²
			dst = appendFixedField(dst, "x", int64(b.X), 3)
			dst = appendFixedField(dst, "y", int64(b.Y), 3)
			dst = appendFixedField(dst, "z", int64(b.Z), 3)
		}
	case *kestrel.Battery:
		if b != nil {
			dst = appendUintField(dst, "capacity", uint64(b.Capacity))
			dst = appendStringField(dst, "status", b.Status)
			dst = appendFixedField(dst, "voltage", int64(b.VoltageMV), 3) // volts
			dst = append(dst, `,"temp":`...)
			dst = appendOpt(dst, b.HasTemp, int64(b.TempDeciC), 1) // °C
		}
	case *kestrel.Thermal:
		if b != nil {
			dst = appendStringField(dst, "zone", b.Zone)
			dst = appendFixedField(dst, "temp", int64(b.MilliC), 3) // °C
		}
	case *kestrel.Event:
		if b != nil {
			dst = appendStringField(dst, "type", b.Type.String())
			dst = appendStringField(dst, "source", b.Source)
			dst = appendStringField(dst, "name", b.Name)
			dst = appendIntField(dst, "value", b.Value)
			dst = appendStringField(dst, "text", b.Text)
		}
	case *kestrel.LinkUsage:
		if b != nil {
			dst = appendStringField(dst, "iface", b.Iface)
			dst = appendStringField(dst, "source", b.Source)
			dst = appendUintField(dst, "interval_ms", uint64(b.IntervalMS))
			dst = appendUintField(dst, "rx_bytes", b.RxBytes)
			dst = appendUintField(dst, "tx_bytes", b.TxBytes)
			dst = appendUintField(dst, "rx_packets", b.RxPackets)
			dst = appendUintField(dst, "tx_packets", b.TxPackets)
			dst = appendUintField(dst, "drops", b.Drops)
		}
	case *kestrel.ExecAudit:
		if b != nil {
			dst = appendStringField(dst, "path", b.Path)
			dst = appendUintField(dst, "pid", uint64(b.PID))
			dst = appendUintField(dst, "ppid", uint64(b.PPID))
			dst = appendUintField(dst, "uid", uint64(b.UID))
			dst = appendStringField(dst, "parent_comm", b.ParentComm)
			dst = append(dst, `,"allowed":`...)
			dst = strconv.AppendBool(dst, b.Allowed)
		}
	case *kestrel.Checkpoint:
		if b != nil {
			dst = appendStringField(dst, "reason", b.Reason.String())
			dst = appendUintField(dst, "from_seq", b.FromSeq)
			dst = appendUintField(dst, "last_seq", b.LastSeq)
			dst = appendUintField(dst, "count", b.Count)
			dst = appendStringField(dst, "head", hex.EncodeToString(b.Head))
			dst = appendStringField(dst, "sig", hex.EncodeToString(b.Sig))
		}
	}
	dst = appendStringField(dst, "priority", r.Priority.String())
	return append(dst, '}')
}

func appendDOP(dst []byte, name string, v uint16) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendOpt(dst, v != 0, int64(v), 2)
}

func appendUintField(dst []byte, name string, v uint64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendUint(dst, v, 10)
}

func appendIntField(dst []byte, name string, v int64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, v, 10)
}

func appendFixedField(dst []byte, name string, v int64, scale int) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendFixed(dst, v, scale)
}

func appendStringField(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, v)
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// ErrFixJSON is wrapped by ParseFixJSON's errors.
var ErrFixJSON = errors.New("bad fix JSON")

type fixJSON struct {
	Time  *string         `json:"time"`
	Lat   json.RawMessage `json:"lat"`
	Lon   json.RawMessage `json:"lon"`
	Alt   json.RawMessage `json:"alt"`
	Speed json.RawMessage `json:"speed"`
	Track json.RawMessage `json:"track"`
	Mode  json.RawMessage `json:"mode"`
}

// ParseFixJSON parses one fix in the `nmea decode` format. It rounds half
// away from zero: lat/lon to 1e-7 degrees, alt to cm, speed to cm/s, track
// to centidegrees, and the time to the millisecond. alt, speed and track
// may be null or absent. A track in [0, 360] is kept as given (360.00
// stays 36000 so that it compares equal to its source); one outside that
// range is reduced modulo 360. A missing mode is taken as 3 with an
// altitude and 2 without.
func ParseFixJSON(line []byte) (t int64, p kestrel.Position, err error) {
	var f fixJSON
	if err := json.Unmarshal(line, &f); err != nil {
		return 0, p, fmt.Errorf("%w: %v", ErrFixJSON, err)
	}
	if f.Time == nil {
		return 0, p, fmt.Errorf("%w: no time", ErrFixJSON)
	}
	tm, err := time.Parse(time.RFC3339Nano, *f.Time)
	if err != nil {
		return 0, p, fmt.Errorf("%w: time: %v", ErrFixJSON, err)
	}
	t = tm.Round(time.Millisecond).UnixMilli()
	lat, ok, err := fixedField(f.Lat, "lat", 7, 90)
	if err == nil && !ok {
		err = fmt.Errorf("%w: no lat", ErrFixJSON)
	}
	if err != nil {
		return 0, p, err
	}
	lon, ok, err := fixedField(f.Lon, "lon", 7, 180)
	if err == nil && !ok {
		err = fmt.Errorf("%w: no lon", ErrFixJSON)
	}
	if err != nil {
		return 0, p, err
	}
	p.Lat, p.Lon = int32(lat), int32(lon)
	alt, ok, err := fixedField(f.Alt, "alt", 2, 1e7)
	if err != nil {
		return 0, p, err
	}
	if ok {
		p.Alt = int32(alt)
		p.Flags |= kestrel.HasAlt
	}
	speed, ok, err := fixedField(f.Speed, "speed", 2, 1e7)
	if err != nil {
		return 0, p, err
	}
	if ok {
		p.Speed = int32(speed)
		p.Flags |= kestrel.HasSpeed
	}
	track, ok, err := fixedField(f.Track, "track", 2, 1e7)
	if err != nil {
		return 0, p, err
	}
	if ok {
		if track < 0 || track > 36000 {
			track %= 36000
			if track < 0 {
				track += 36000
			}
		}
		p.Track = uint16(track)
		p.Flags |= kestrel.HasTrack
	}
	mode, ok, err := fixedField(f.Mode, "mode", 0, 255)
	if err == nil && mode < 0 {
		err = fmt.Errorf("%w: mode %s out of range", ErrFixJSON, f.Mode)
	}
	if err != nil {
		return 0, p, err
	}
	switch {
	case ok:
		p.Mode = kestrel.FixMode(mode)
	case p.Flags&kestrel.HasAlt != 0:
		p.Mode = kestrel.Fix3D
	default:
		p.Mode = kestrel.Fix2D
	}
	return t, p, nil
}

// fixedField parses a JSON number (or null) to a fixed-point integer with
// scale decimals, bounded by ±limit in whole units.
func fixedField(raw json.RawMessage, name string, scale int, limit int64) (int64, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	v, err := parseFixed(raw, scale)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %s: %v", ErrFixJSON, name, err)
	}
	max := limit
	for i := 0; i < scale; i++ {
		max *= 10
	}
	if v > max || v < -max {
		return 0, false, fmt.Errorf("%w: %s %s out of range", ErrFixJSON, name, raw)
	}
	return v, true, nil
}

// parseFixed converts a JSON number to round(x * 10^scale), rounding half
// away from zero, working on the decimal digits so that no binary floating
// point error can move a value across a rounding boundary.
func parseFixed(s []byte, scale int) (int64, error) {
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	var digits [40]byte
	nd := 0      // significant digits kept
	dropped := 0 // integer digits beyond capacity (value too large)
	exp10 := 0   // value = digits * 10^exp10
	sawDigit := false
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		sawDigit = true
		if nd == 0 && s[i] == '0' {
			continue
		}
		if nd < len(digits) {
			digits[nd] = s[i]
			nd++
		} else {
			dropped++
		}
	}
	if i < len(s) && s[i] == '.' {
		i++
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			sawDigit = true
			if nd == 0 && s[i] == '0' {
				exp10--
				continue
			}
			if nd < len(digits) {
				digits[nd] = s[i]
				nd++
				exp10--
			}
		}
	}
	if !sawDigit {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	exp10 += dropped
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		esign := 1
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			if s[i] == '-' {
				esign = -1
			}
			i++
		}
		e := 0
		start := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if e < 10000 {
				e = e*10 + int(s[i]-'0')
			}
		}
		if i == start {
			return 0, fmt.Errorf("not a number: %q", s)
		}
		exp10 += esign * e
	}
	if i != len(s) {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	if nd == 0 {
		return 0, nil
	}
	shift := exp10 + scale // result = digits * 10^shift
	keep := nd + shift     // digits before the rounding point
	if keep > 18 {
		return 0, fmt.Errorf("number too large: %q", s)
	}
	var v int64
	for j := 0; j < keep; j++ {
		v *= 10
		if j < nd {
			v += int64(digits[j] - '0')
		}
	}
	if keep >= 0 && keep < nd && digits[keep] >= '5' {
		v++ // half away from zero: the first dropped digit decides
	}
	if neg {
		v = -v
	}
	return v, nil
}
