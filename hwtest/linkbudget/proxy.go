package linkbudget

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Proxy is a TCP proxy from a loopback port to upstream that counts every
// byte both ways and, unless TLS is on, sorts them by MQTT channel.
type Proxy struct {
	upstream string
	tls      bool
	ln       net.Listener
	wg       sync.WaitGroup

	mu      sync.Mutex
	conns   []net.Conn
	bytes   map[string]int64 // category -> bytes
	packets map[string]int64
	up, dn  int64
	records int64 // TLS records
	bad     string
}

// Start listens on 127.0.0.1 and forwards to upstream until the test ends.
// tlsOn says the stream is TLS: bytes are then counted per TLS record.
func Start(t testing.TB, upstream string, tlsOn bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{upstream: upstream, tls: tlsOn, ln: ln, bytes: map[string]int64{}, packets: map[string]int64{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops the proxy and waits for its goroutines. Safe twice.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		conn := &mqttConn{ids: [2]map[uint16]string{{}, {}}}
		p.wg.Add(2)
		go p.pipe(c, u, conn, 0)
		go p.pipe(u, c, conn, 1)
	}
}

// pipe copies src to dst, feeding every byte to the counter of direction
// dir (0: agent to broker, 1: broker to agent).
func (p *Proxy) pipe(src, dst net.Conn, conn *mqttConn, dir int) {
	defer p.wg.Done()
	defer dst.Close()
	fr := framer{tls: p.tls}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if dir == 0 {
				p.up += int64(n)
			} else {
				p.dn += int64(n)
			}
			fr.feed(buf[:n], func(pkt []byte) { p.count(conn, dir, pkt) })
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

// framer cuts a byte stream into MQTT packets (fixed header, remaining
// length as a variable byte integer, payload) or, for TLS, records.
type framer struct {
	buf []byte
	tls bool
}

func (f *framer) feed(b []byte, packet func([]byte)) {
	f.buf = append(f.buf, b...)
	for {
		n := f.next()
		if n == 0 || n > len(f.buf) {
			return
		}
		packet(f.buf[:n])
		f.buf = f.buf[n:]
	}
}

// next is the length of the first whole unit in buf, or 0 if unknown yet.
func (f *framer) next() int {
	if f.tls {
		if len(f.buf) < 5 {
			return 0
		}
		return 5 + int(binary.BigEndian.Uint16(f.buf[3:5]))
	}
	rem, mult := 0, 1
	for i := 1; i <= 4; i++ {
		if i >= len(f.buf) {
			return 0
		}
		rem += int(f.buf[i]&0x7f) * mult
		if f.buf[i]&0x80 == 0 {
			return 1 + i + rem
		}
		mult *= 128
	}
	return len(f.buf) + 1 // malformed: never whole (counted as unparsed)
}

// mqttConn remembers, per direction, which channel each in-flight packet
// identifier carried, so that its PUBACK is counted to that channel.
type mqttConn struct {
	ids [2]map[uint16]string
}

// count adds one packet (p.mu held).
func (p *Proxy) count(conn *mqttConn, dir int, pkt []byte) {
	if p.tls {
		p.records++
		cat := "tls handshake and alerts"
		if pkt[0] == 23 {
			cat = "tls application data"
		}
		p.add(cat, len(pkt))
		return
	}
	way := [2]string{"up", "down"}[dir]
	typ := pkt[0] >> 4
	switch typ {
	case 3: // PUBLISH
		hdr := 1
		for pkt[hdr]&0x80 != 0 {
			hdr++
		}
		hdr++
		if len(pkt) < hdr+2 {
			p.bad = "short publish"
			return
		}
		tl := int(binary.BigEndian.Uint16(pkt[hdr:]))
		if len(pkt) < hdr+2+tl {
			p.bad = "short topic"
			return
		}
		ch := channel(string(pkt[hdr+2 : hdr+2+tl]))
		if qos := (pkt[0] >> 1) & 3; qos > 0 && len(pkt) >= hdr+4+tl {
			conn.ids[dir][binary.BigEndian.Uint16(pkt[hdr+2+tl:])] = ch
		}
		p.add(ch+" publish "+way, len(pkt))
	case 4: // PUBACK: for the other direction's PUBLISH
		ch := "?"
		if len(pkt) >= 4 {
			id := binary.BigEndian.Uint16(pkt[2:])
			if c, ok := conn.ids[1-dir][id]; ok {
				ch = c
				delete(conn.ids[1-dir], id)
			}
		}
		p.add(ch+" puback "+way, len(pkt))
	case 12, 13:
		p.add("pings (PINGREQ, PINGRESP)", len(pkt))
	default: // CONNECT, CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, DISCONNECT
		p.add("connect, subscribe, disconnect", len(pkt))
	}
}

func (p *Proxy) add(cat string, n int) {
	p.bytes[cat] += int64(n)
	p.packets[cat]++
}

// channel is the part of a Kestrel topic after kestrel/v1/{fleet}/{device}/.
func channel(topic string) string {
	parts := strings.SplitN(topic, "/", 5)
	if len(parts) == 5 && parts[0] == "kestrel" {
		return parts[4]
	}
	return topic
}

// Counts is a snapshot: bytes and packets per category, totals per way.
type Counts struct {
	Bytes, Packets map[string]int64
	Up, Down       int64
	Records        int64 // TLS records
	Unparsed       string
}

// Counts returns what crossed so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Counts{Bytes: maps.Clone(p.bytes), Packets: maps.Clone(p.packets), Up: p.up, Down: p.dn, Records: p.records, Unparsed: p.bad}
}

// Sorted lists the categories, largest first.
func (c Counts) Sorted() []string {
	cats := slices.Collect(maps.Keys(c.Bytes))
	slices.SortFunc(cats, func(a, b string) int {
		if c.Bytes[a] != c.Bytes[b] {
			return int(c.Bytes[b] - c.Bytes[a])
		}
		return strings.Compare(a, b)
	})
	return cats
}

// Sum is the bytes of every counted packet.
func (c Counts) Sum() int64 {
	var n int64
	for _, b := range c.Bytes {
		n += b
	}
	return n
}

func (c Counts) String() string {
	var b strings.Builder
	for _, k := range c.Sorted() {
		fmt.Fprintf(&b, "%s: %d B in %d\n", k, c.Bytes[k], c.Packets[k])
	}
	return b.String()
}
