package atmodem

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
)

// host is the code-under-test side of the pty, kept raw and simple.
type host struct {
	t *testing.T
	f *os.File
}

func (h host) send(cmd string) string {
	h.t.Helper()
	if _, err := h.f.WriteString(cmd + "\r"); err != nil {
		h.t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 256)
	h.f.SetReadDeadline(time.Now().Add(3 * time.Second))
	for !bytes.HasSuffix(got, []byte("OK\r\n")) && !bytes.HasSuffix(got, []byte("ERROR\r\n")) &&
		!bytes.Contains(got, []byte("ERROR: ")) {
		n, err := h.f.Read(buf)
		if err != nil {
			h.t.Fatalf("%s: %v after %q", cmd, err, got)
		}
		got = append(got, buf[:n]...)
	}
	return string(got)
}

func open(t *testing.T, p kestrel.RadioProfile) (*Modem, host) {
	m, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	return m, host{t, f}
}

func TestV250Framing(t *testing.T) {
	_, h := open(t, kestrel.ProfileLTE)
	// Factory default echoes; answers are <CR><LF>text<CR><LF>.
	if got := h.send("AT+CSQ"); got != "AT+CSQ\r\r\n+CSQ: 18,99\r\n\r\nOK\r\n" {
		t.Fatalf("got %q", got)
	}
	h.send("ATE0")
	if got := h.send("AT+CGSN"); got != "\r\n356938035643809\r\n\r\nOK\r\n" {
		t.Fatalf("got %q", got)
	}
	if got := h.send("AT+FOO"); got != "\r\nERROR\r\n" {
		t.Fatalf("plain error: %q", got)
	}
	h.send("AT+CMEE=2")
	if got := h.send("AT+FOO"); !strings.Contains(got, "+CME ERROR: operation not supported") {
		t.Fatalf("verbose error: %q", got)
	}
}

func TestRebootForgetsSettings(t *testing.T) {
	m, h := open(t, kestrel.ProfileLTE)
	h.send("ATE0")
	h.send("AT+CEREG=2")
	if got := h.send("AT+CEREG?"); !strings.Contains(got, `+CEREG: 2,1,"00C3","0A1B2C3D",7`) {
		t.Fatalf("got %q", got)
	}
	m.Reboot(10*time.Millisecond, "RDY")
	buf := make([]byte, 64)
	h.f.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := h.f.Read(buf)
	if err != nil || string(buf[:n]) != "\r\nRDY\r\n" {
		t.Fatalf("banner %q %v", buf[:n], err)
	}
	// Echo is back and URCs are off, as after a real restart.
	if got := h.send("AT+CEREG?"); got != "AT+CEREG?\r\r\n+CEREG: 0,1\r\n\r\nOK\r\n" {
		t.Fatalf("after reboot: %q", got)
	}
}

func TestTETRAAnswers(t *testing.T) {
	m, h := open(t, kestrel.ProfileTETRA)
	h.send("ATE0")
	for cmd, want := range map[string]string{
		"AT+CSQ?":   "+CSQ: 20,99",
		"AT+CTOM?":  "+CTOM: 0",
		"AT+CNUMF?": "+CNUMF: 6,2342600012345",
		"AT+CTGS?":  "+CTGS: 1,2342609001001",
		"AT+CREG?":  "+CREG: 0,1,1001,23426",
	} {
		if got := h.send(cmd); !strings.Contains(got, "\r\n"+want+"\r\n") {
			t.Errorf("%s: got %q, want %q", cmd, got, want)
		}
	}
	h.send("AT+CTGS=1,2342609001777")
	if m.State().Talkgroup != "2342609001777" {
		t.Fatalf("talkgroup not set: %+v", m.State())
	}
}
