// Package faultproxy is a TCP proxy for loopback tests that injects the
// faults of police radio links: cuts (RST), a link that is down, a link
// that silently eats data (a tunnel: only keepalives notice), stalls that
// hold data and then release it (what heavy loss looks like to TCP),
// latency and a bandwidth cap. The machine has no netem, so this is how
// scenarios get a bad network.
//
// Only tests and cmd import hwtest.
package faultproxy

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards connections from its own loopback address to upstream.
type Proxy struct {
	upstream string
	ln       net.Listener
	wg       sync.WaitGroup

	mu        sync.Mutex
	conns     map[*link]struct{}
	down      bool
	blackhole bool
	stall     bool
	stallCh   chan struct{} // closed when a stall lifts
	latency   time.Duration
	rate      int // bytes per second per direction, 0 = unlimited
	closed    bool

	accepted atomic.Int64
	upBytes  atomic.Int64 // client -> upstream, forwarded
	dnBytes  atomic.Int64 // upstream -> client, forwarded
	dropped  atomic.Int64 // bytes eaten by the blackhole
}

// Listen starts a proxy on a free 127.0.0.1 port towards upstream
// (host:port).
func Listen(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy listen: %w", err)
	}
	p := &Proxy{upstream: upstream, ln: ln, conns: make(map[*link]struct{}), stallCh: make(chan struct{})}
	close(p.stallCh)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Start is Listen for tests: it fails the test on error and closes the
// proxy when the test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := Listen(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Addr is the proxy's host:port: point the client here.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, resets every connection and waits for all the
// proxy's goroutines. Safe to call twice.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.SetStall(false)
	p.wg.Wait()
	return err
}

// Cut resets (RST) every open connection, both sides; new connections are
// still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
}

// SetDown takes the link down (cuts every connection and resets new ones
// as they arrive) or brings it back up.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// SetBlackhole makes the link silently discard everything in both
// directions while connections stay open, or stops doing so.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// SetStall holds all data in both directions until the stall is lifted,
// then delivers it in order.
func (p *Proxy) SetStall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.stall {
		return
	}
	p.stall = on
	if on {
		p.stallCh = make(chan struct{})
	} else {
		close(p.stallCh)
	}
}

// SetLatency delays every chunk by d in each direction.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetRate caps each direction at bytesPerSec (0: no cap).
func (p *Proxy) SetRate(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}

// Stats are the bytes forwarded upstream and downstream, the bytes the
// blackhole ate, and the connections accepted.
type Stats struct {
	Up, Down, Dropped, Accepted int64
}

// Stats returns the counters since Listen.
func (p *Proxy) Stats() Stats {
	return Stats{Up: p.upBytes.Load(), Down: p.dnBytes.Load(), Dropped: p.dropped.Load(), Accepted: p.accepted.Load()}
}

// Conns is the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		down := p.down || p.closed
		p.mu.Unlock()
		if down {
			rst(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	u, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		rst(c) // the far end is unreachable: so is the proxy
		return
	}
	l := newLink(c, u)
	p.mu.Lock()
	if p.closed || p.down {
		p.mu.Unlock()
		l.reset()
		return
	}
	p.conns[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(l, c, u, &p.upBytes) })
	wg.Go(func() { p.pipe(l, u, c, &p.dnBytes) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst through the fault model. A reader goroutine
// timestamps chunks; the writer holds each until its latency has passed,
// the stall has lifted and the rate allows. When either side fails, the
// whole link is torn down, as a real connection would be.
func (p *Proxy) pipe(l *link, src, dst net.Conn, count *atomic.Int64) {
	q := make(chan chunk, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(q)
		for {
			buf := make([]byte, 16<<10)
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				hole := p.blackhole
				p.mu.Unlock()
				if hole {
					p.dropped.Add(int64(n))
				} else {
					q <- chunk{b: buf[:n], at: time.Now()}
				}
			}
			if err != nil {
				return
			}
		}
	})
	var free time.Time
	for c := range q {
		p.mu.Lock()
		lat, rate, stall := p.latency, p.rate, p.stallCh
		p.mu.Unlock()
		if !l.sleep(time.Until(c.at.Add(lat))) {
			break
		}
		select {
		case <-stall:
		case <-l.done:
		}
		if rate > 0 {
			now := time.Now()
			if free.Before(now) {
				free = now
			}
			free = free.Add(time.Duration(int64(len(c.b)) * int64(time.Second) / int64(rate)))
			if !l.sleep(time.Until(free)) {
				break
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
		count.Add(int64(len(c.b)))
	}
	l.close()
	for range q { // let the reader finish
	}
	wg.Wait()
}

type link struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

func newLink(c, s net.Conn) *link { return &link{client: c, server: s, done: make(chan struct{})} }

// sleep waits d unless the link ends first (false).
func (l *link) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// close ends both sides gracefully (FIN), as when one end went away.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.server.Close()
	})
}

// reset ends both sides with RST, as a dropped radio link looks once the
// far end notices.
func (l *link) reset() {
	l.once.Do(func() {
		close(l.done)
		rst(l.client)
		rst(l.server)
	})
}

func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

var _ io.Closer = (*Proxy)(nil)
