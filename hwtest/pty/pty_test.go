package pty

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
)

func TestBytesCrossBothWays(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := os.OpenFile(p.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	msg := []byte("$GPGGA,1\r\n\x00\xff")
	if _, err := p.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("slave read %q, want %q (raw mode must not translate)", got, msg)
	}

	if _, err := s.Write([]byte("AT\r")); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	back := make([]byte, 3)
	if _, err := io.ReadFull(p, back); err != nil {
		t.Fatal(err)
	}
	if string(back) != "AT\r" {
		t.Fatalf("master read %q", back)
	}
	if _, err := p.Baud(); err != nil {
		t.Fatalf("baud: %v", err)
	}
}

func TestCloseHangsUpSlave(t *testing.T) {
	p, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(p.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after hang-up succeeded; want an error like EIO")
	}
}
