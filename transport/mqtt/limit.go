package mqtt

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// paho reads every packet whole: ReadPacket allocates the remaining length
// the fixed header announces (up to 256 MiB) before looking at it. A device
// must not let anyone with broker credentials make it allocate that, so
// the session dials the broker itself and reads through inboundLimit,
// which parses the MQTT 3.1.1 framing (section 2.2) as it streams and
// rewrites a PUBLISH whose remaining length is over the limit into the
// same PUBLISH (topic, QoS, packet id, flags) with an empty payload. The
// payload bytes are discarded as they arrive, through a fixed buffer; paho
// still sees a well-formed packet and acknowledges it, so the broker does
// not redeliver it, and the handler sees an empty payload, which the fleet
// controller ignores. OnOversize is told the topic and size. Every other
// packet is held to the length MQTT 3.1.1 gives it, and a packet type a
// server never sends is refused (checkLength); either ends the connection
// with ErrMalformedPacket.

// ErrMalformedPacket is returned when the inbound stream breaks the MQTT
// framing; the connection is then dropped.
var ErrMalformedPacket = errors.New("mqtt: malformed inbound packet")

// MQTT 3.1.1 control packet types (section 2.2.1).
const (
	connackType  = 2
	publishType  = 3
	pubackType   = 4
	pubrecType   = 5
	pubrelType   = 6
	pubcompType  = 7
	subackType   = 9
	unsubackType = 11
	pingrespType = 13
)

// subscribeFilters is the most topic filters the session puts in one
// SUBSCRIBE (it subscribes one at a time), so a SUBACK carries the packet
// identifier and at most this many return codes (section 3.9.3).
const subscribeFilters = 1

// checkLength bounds the remaining length of every packet but PUBLISH to
// what MQTT 3.1.1 gives it: CONNACK (3.2), PUBACK, PUBREC, PUBREL, PUBCOMP
// (3.4-3.7) and UNSUBACK (3.11) are 2 bytes, SUBACK (3.9) 2 plus one per
// filter, PINGRESP (3.13) 0. CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
// DISCONNECT and the reserved types 0 and 15 never go from a server to a
// client. Without this, paho's ReadPacket would allocate whatever length a
// header announces (0x90 ff ff ff 7f: a 256 MiB SUBACK).
func checkLength(b0 byte, rl int) error {
	var lo, hi int
	switch b0 >> 4 {
	case publishType:
		return nil // bounded by the limit, payload discarded
	case connackType, pubackType, pubrecType, pubrelType, pubcompType, unsubackType:
		lo, hi = 2, 2
	case subackType:
		lo, hi = 3, 2+subscribeFilters
	case pingrespType:
		lo, hi = 0, 0
	default:
		return fmt.Errorf("%w: packet type %d is never sent by a server", ErrMalformedPacket, b0>>4)
	}
	if rl < lo || rl > hi {
		return fmt.Errorf("%w: packet type %d with remaining length %d (MQTT 3.1.1 allows %d..%d)", ErrMalformedPacket, b0>>4, rl, lo, hi)
	}
	return nil
}

// inboundLimit filters an inbound MQTT byte stream.
type inboundLimit struct {
	r       *bufio.Reader
	max     int
	onDrop  func(topic string, size int)
	out     []byte // rewritten header bytes not yet returned
	pass    int    // body bytes of the current packet to pass through
	discard int64  // payload bytes of an oversize PUBLISH still to drop
	scratch [4096]byte
}

func newInboundLimit(r io.Reader, max int, onDrop func(string, int)) *inboundLimit {
	return &inboundLimit{r: bufio.NewReaderSize(r, 4096), max: max, onDrop: onDrop}
}

func (l *inboundLimit) Read(p []byte) (int, error) {
	for {
		if len(l.out) > 0 {
			n := copy(p, l.out)
			l.out = l.out[n:]
			return n, nil
		}
		if l.pass > 0 {
			n, err := l.r.Read(p[:min(len(p), l.pass)])
			l.pass -= n
			return n, err
		}
		for l.discard > 0 {
			n, err := l.r.Read(l.scratch[:min(int64(len(l.scratch)), l.discard)])
			l.discard -= int64(n)
			if err != nil {
				return 0, err
			}
		}
		if err := l.next(); err != nil {
			return 0, err
		}
	}
}

// next reads one fixed header and decides what to do with the packet.
func (l *inboundLimit) next() error {
	b0, err := l.r.ReadByte()
	if err != nil {
		return err
	}
	hdr := []byte{b0}
	rl, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return fmt.Errorf("%w: remaining length over 4 bytes", ErrMalformedPacket)
		}
		c, err := l.r.ReadByte()
		if err != nil {
			return err
		}
		hdr = append(hdr, c)
		rl += int(c&0x7f) * mult
		mult *= 128
		if c&0x80 == 0 {
			break
		}
	}
	if err := checkLength(b0, rl); err != nil {
		return err
	}
	if b0>>4 != publishType || rl <= l.max {
		l.out, l.pass = hdr, rl
		return nil
	}
	// An oversize PUBLISH: keep topic and packet id, drop the payload.
	var tl [2]byte
	if _, err := io.ReadFull(l.r, tl[:]); err != nil {
		return err
	}
	n := int(tl[0])<<8 | int(tl[1])
	keep := 2 + n
	if (b0>>1)&3 > 0 {
		keep += 2 // packet identifier
	}
	if keep > rl {
		return fmt.Errorf("%w: PUBLISH variable header longer than the packet", ErrMalformedPacket)
	}
	vh := make([]byte, keep) // at most 65537 bytes: the topic's own bound
	copy(vh, tl[:])
	if _, err := io.ReadFull(l.r, vh[2:]); err != nil {
		return err
	}
	if l.onDrop != nil {
		l.onDrop(string(vh[2:2+n]), rl)
	}
	l.out = append(appendRemainingLength([]byte{b0}, keep), vh...)
	l.discard = int64(rl - keep)
	return nil
}

func appendRemainingLength(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// limitConn is a broker connection whose reads go through inboundLimit.
type limitConn struct {
	net.Conn
	in *inboundLimit
}

func (c *limitConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// dialLimited opens the broker connection the way paho does for the
// schemes the session accepts (ParseBrokerURL), and bounds what it reads.
func (s *Session) dialLimited(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = d.Dial("tcp", uri.Host)
	case "tls", "ssl", "mqtts":
		tc := o.TLSConfig
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		} else {
			tc = tc.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = uri.Hostname()
		}
		conn, err = tls.DialWithDialer(d, "tcp", uri.Host, tc)
	default:
		return nil, fmt.Errorf("mqtt: unsupported scheme %q", strings.ToLower(uri.Scheme))
	}
	if err != nil {
		return nil, err
	}
	return &limitConn{Conn: conn, in: newInboundLimit(conn, s.opts.MaxInbound, s.oversize)}, nil
}

// oversize counts a refused inbound message and tells the owner.
func (s *Session) oversize(topic string, size int) {
	s.stats.Oversize.Add(1)
	s.log.Warn("inbound message over the size limit: payload discarded unread", "topic", topic, "bytes", size, "limit", s.opts.MaxInbound)
	if s.opts.OnOversize != nil {
		s.opts.OnOversize(topic, size)
	}
}
