package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echo is an upstream that writes back what it reads.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg []byte, timeout time.Duration) ([]byte, error) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

func TestForwardAndCut(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	got, err := roundTrip(t, c, []byte("hello"), 2*time.Second)
	if err != nil || string(got) != "hello" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if st := p.Stats(); st.Up != 5 || st.Down != 5 {
		t.Errorf("stats %+v, want 5 bytes each way", st)
	}
	p.Cut()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("read after cut succeeded")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read after cut timed out: the connection was not cut")
	}
	// Still accepting after a cut.
	c2 := dial(t, p)
	if got, err := roundTrip(t, c2, []byte("again"), 2*time.Second); err != nil || string(got) != "again" {
		t.Fatalf("after cut: %q, %v", got, err)
	}
}

func TestDown(t *testing.T) {
	p := Start(t, echo(t))
	p.SetDown(true)
	// The reset may come before the dial returns, or on the first read.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c.Close()
		if _, err := roundTrip(t, c, []byte("x"), 2*time.Second); err == nil {
			t.Fatal("round trip through a down link succeeded")
		}
	}
	p.SetDown(false)
	c2 := dial(t, p)
	if _, err := roundTrip(t, c2, []byte("x"), 2*time.Second); err != nil {
		t.Fatalf("after up: %v", err)
	}
}

func TestBlackholeEatsData(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	p.SetBlackhole(true)
	if _, err := roundTrip(t, c, []byte("lost"), 300*time.Millisecond); err == nil {
		t.Fatal("data crossed a blackhole")
	}
	if st := p.Stats(); st.Dropped != 4 {
		t.Errorf("dropped %d bytes, want 4", st.Dropped)
	}
	if p.Conns() != 1 {
		t.Errorf("connection closed by the blackhole; it must stay open (conns=%d)", p.Conns())
	}
	p.SetBlackhole(false)
	c.SetReadDeadline(time.Time{})
	if got, err := roundTrip(t, c, []byte("back"), 2*time.Second); err != nil || string(got) != "back" {
		t.Fatalf("after blackhole: %q, %v", got, err)
	}
}

func TestStallHoldsThenDelivers(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	p.SetStall(true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := c.Read(make([]byte, 4)); n != 0 {
		t.Fatal("data crossed a stalled link")
	}
	p.SetStall(false)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after stall: %q, %v", got, err)
	}
}

func TestLatencyAndRate(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(t, c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// A lower bound only: a slow machine makes it longer, never shorter.
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Errorf("round trip %v with 100ms each way", rtt)
	}
	p.SetLatency(0)
	p.SetRate(20000)
	msg := bytes.Repeat([]byte("k"), 10000)
	start = time.Now()
	if _, err := roundTrip(t, c, msg, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("10 kB each way at 20 kB/s took %v", d)
	}
}

func TestCloseTwice(t *testing.T) {
	p, err := Listen(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	dial(t, p)
	p.SetStall(true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
