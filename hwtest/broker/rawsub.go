package broker

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// rawSub is a minimal MQTT 3.1.1 subscriber (OASIS MQTT 3.1.1, sections
// 3.1-3.3, 3.8) used as mosquitto's observer. paho is not used here on
// purpose: when a connection dies, paho drops PUBLISH packets it has read
// but not yet handed to a handler, and a killed broker must not make the
// observer lose what the broker had already forwarded.
//
// It subscribes at QoS 0 with a persistent session and sends nothing after
// SUBSCRIBE (keepalive off), so the broker's socket never holds unread
// bytes: when mosquitto is killed the kernel closes the socket with FIN
// after the data, not RST, and every byte written arrives.
type rawSub struct {
	addr   string
	tls    *tls.Config
	id     string
	filter string
	add    func(Message)

	mu     sync.Mutex
	conn   net.Conn
	closed bool
	done   chan struct{}
}

func startRawSub(addr string, tc *tls.Config, id, filter string, add func(Message)) (*rawSub, error) {
	s := &rawSub{addr: addr, tls: tc, id: id, filter: filter, add: add, done: make(chan struct{})}
	c, r, err := s.dial(true)
	if err != nil {
		return nil, err
	}
	go s.loop(c, r)
	return s, nil
}

// dial connects and, when subscribe is set or the broker lost the session,
// subscribes; it returns once the broker has answered.
func (s *rawSub) dial(subscribe bool) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(&d, "tcp", s.addr, s.tls)
	} else {
		c, err = d.Dial("tcp", s.addr)
	}
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	// CONNECT: protocol "MQTT" level 4, clean session off, keepalive 0.
	var vh []byte
	vh = appendStr(vh, "MQTT")
	vh = append(vh, 4, 0x00, 0, 0)
	vh = appendStr(vh, s.id)
	if _, err := c.Write(packet(0x10, vh)); err != nil {
		c.Close()
		return nil, nil, err
	}
	typ, body, err := readPacket(r)
	if err != nil || typ != 0x20 || len(body) != 2 || body[1] != 0 {
		c.Close()
		return nil, nil, fmt.Errorf("observer CONNACK: type %#x body %v: %v", typ, body, err)
	}
	if subscribe || body[0]&1 == 0 {
		var sb []byte
		sb = binary.BigEndian.AppendUint16(sb, 1)
		sb = appendStr(sb, s.filter)
		sb = append(sb, 0) // QoS 0
		if _, err := c.Write(packet(0x82, sb)); err != nil {
			c.Close()
			return nil, nil, err
		}
		for {
			typ, body, err := readPacket(r)
			if err != nil {
				c.Close()
				return nil, nil, fmt.Errorf("observer SUBACK: %w", err)
			}
			if typ == 0x90 {
				if len(body) < 3 || body[2] == 0x80 {
					c.Close()
					return nil, nil, errors.New("observer subscription refused")
				}
				break
			}
			s.handle(typ, body) // a retained message may come first
		}
	}
	_ = c.SetDeadline(time.Time{})
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return c, r, nil
}

func (s *rawSub) loop(c net.Conn, r *bufio.Reader) {
	defer close(s.done)
	for {
		for {
			typ, body, err := readPacket(r)
			if err != nil {
				break
			}
			s.handle(typ, body)
		}
		c.Close()
		for {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			var err error
			if c, r, err = s.dial(false); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (s *rawSub) handle(typ byte, body []byte) {
	if typ&0xf0 != 0x30 {
		return
	}
	if len(body) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+n {
		return
	}
	topic := string(body[2 : 2+n])
	rest := body[2+n:]
	if qos := (typ >> 1) & 3; qos > 0 {
		if len(rest) < 2 {
			return
		}
		// Only QoS 0 is subscribed; acknowledge anything else anyway.
		s.mu.Lock()
		if s.conn != nil {
			_, _ = s.conn.Write(packet(0x40, rest[:2]))
		}
		s.mu.Unlock()
		rest = rest[2:]
	}
	s.add(Message{Topic: topic, Payload: append([]byte(nil), rest...), Retained: typ&1 != 0, At: time.Now()})
}

func (s *rawSub) close() {
	s.mu.Lock()
	s.closed = true
	if s.conn != nil {
		_, _ = s.conn.Write([]byte{0xe0, 0}) // DISCONNECT
		s.conn.Close()
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func packet(h byte, body []byte) []byte {
	b := []byte{h}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	var n, mul int = 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h, body, nil
}
