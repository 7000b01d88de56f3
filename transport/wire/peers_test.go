package wire

import (
	"encoding/binary"
	"math"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Peer encoders for the size benchmark: what the same fixes cost in the
// formats police and fleet trackers use today. They are real encoders of
// the published layouts, used only to count bytes and measure what each
// keeps of the fix.

// appendCodec8 appends a Teltonika Codec 8 AVL data packet (Teltonika
// "Codec 8" protocol description; TCP framing) holding recs:
//
//	preamble 4 (zero) | data length 4 | codec id 1 (0x08) | count 1 |
//	AVL records | count 1 | CRC-16/IBM over codec id..count, in 4 bytes
//
// Each AVL record is timestamp 8 (ms) | priority 1 | GPS element 15
// (lon 4, lat 4 in 1e-7 deg; altitude 2 in m; angle 2 in deg; satellites 1;
// speed 2 in km/h) | IO element, minimal: event IO id 1, total count 1,
// and the 1-, 2-, 4- and 8-byte IO counts, all zero: 6. So 30 bytes per
// record and 15 per packet.
func appendCodec8(dst []byte, recs []kestrel.Record) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // preamble, length (filled below)
	body := len(dst)
	dst = append(dst, 0x08, byte(len(recs)))
	for i := range recs {
		p := recs[i].Body.(*kestrel.Position)
		dst = binary.BigEndian.AppendUint64(dst, uint64(recs[i].Time))
		dst = append(dst, 0) // priority: low
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.Lon))
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.Lat))
		dst = binary.BigEndian.AppendUint16(dst, uint16(int16(roundDiv(int64(p.Alt), 100))))
		dst = binary.BigEndian.AppendUint16(dst, uint16(roundDiv(int64(p.Track), 100)%360))
		dst = append(dst, p.Sats)
		dst = binary.BigEndian.AppendUint16(dst, uint16(roundDiv(int64(p.Speed)*36, 1000))) // cm/s to km/h
		dst = append(dst, 0, 0, 0, 0, 0, 0)                                                 // IO element
	}
	dst = append(dst, byte(len(recs)))
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(dst)-body))
	return binary.BigEndian.AppendUint32(dst, uint32(crc16IBM(dst[body:])))
}

// crc16IBM is CRC-16/ARC (poly 0xA001 reflected), as Codec 8 specifies.
func crc16IBM(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func roundDiv(a, b int64) int64 {
	if a < 0 {
		return -((-a + b/2) / b)
	}
	return (a + b/2) / b
}

// lipBits is the size of a TETRA LIP short location report as an SDS
// user data field: the SDS-TL protocol identifier (8 bits, 0x0A: LIP)
// and the 76-bit PDU of ETSI TS 100 392-18-1 section 6.2.1.
const lipBits = 8 + 2 + 2 + 25 + 24 + 3 + 7 + 4 + 1 + 8

// appendLIP appends one short location report (84 bits; the last byte is
// half padding, so 11 bytes here though the air interface sends 84 bits).
func appendLIP(dst []byte, p *kestrel.Position) []byte {
	w := bitWriter{buf: dst}
	w.write(0x0A, 8) // protocol identifier: LIP
	w.write(0, 2)    // PDU type: short location report
	w.write(0, 2)    // time elapsed: < 5 s
	w.write(uint64(lipAngle(int64(p.Lon), 25, 180)), 25)
	w.write(uint64(lipAngle(int64(p.Lat), 24, 90)), 24)
	w.write(1, 3) // position error: < 20 m
	w.write(uint64(lipVelocity(p)), 7)
	w.write(uint64(lipDirection(p)), 4)
	w.write(0, 1) // type of additional data: reason for sending
	w.write(0, 8) // reason: status / periodic
	return w.flush()
}

// lipAngle is an angle in 1e-7 degrees as n-bit two's complement of
// full-scale degrees (TS 100 392-18-1 6.3.30 and 6.3.50).
func lipAngle(v int64, n uint, full float64) int64 {
	x := int64(math.Round(float64(v) / 1e7 * float64(int64(1)<<(n-1)) / full))
	hi := int64(1)<<(n-1) - 1
	x = min(max(x, -hi-1), hi)
	return x & (1<<n - 1)
}

func lipAngleBack(x int64, n uint, full float64) float64 {
	if x&(1<<(n-1)) != 0 {
		x -= 1 << n
	}
	return float64(x) * full / float64(int64(1)<<(n-1))
}

// lipVelocity: 0-28 km/h in steps of 1, then 16*(1.038)^(K-13) km/h up to
// K=126; 127 is unknown (6.3.17).
func lipVelocity(p *kestrel.Position) int {
	if p.Flags&kestrel.HasSpeed == 0 {
		return 127
	}
	kmh := float64(p.Speed) * 0.036
	if kmh < 28.5 {
		return int(math.Round(max(kmh, 0)))
	}
	return min(126, int(math.Round(13+math.Log(kmh/16)/math.Log(1.038))))
}

func lipVelocityBack(k int) float64 { // m/s
	if k <= 28 {
		return float64(k) / 3.6
	}
	return 16 * math.Pow(1.038, float64(k-13)) / 3.6
}

// lipDirection: 16 points of 22.5 degrees (6.3.5).
func lipDirection(p *kestrel.Position) int {
	return int(math.Round(float64(p.Track)/2250)) % 16
}
