package at_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/at"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/logbuf"
)

// rig is a simulated modem on a pty with an engine running on the slave.
type rig struct {
	m    *atmodem.Modem
	port *os.File
	e    *at.Engine
	done chan error
	stop context.CancelFunc
}

func newRig(t *testing.T, p kestrel.RadioProfile, opts at.Options) *rig {
	t.Helper()
	m, err := atmodem.New(p)
	if err != nil {
		t.Fatal(err)
	}
	port, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	if opts.DefaultTimeout == 0 {
		opts.DefaultTimeout = 3 * time.Second // generous: a loaded CI machine stalls
	}
	e := at.NewEngine(port, opts)
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{m: m, port: port, e: e, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("Run did not return after cancel")
		}
		port.Close()
		m.Close()
	})
	return r
}

func (r *rig) cmd(t *testing.T, cmd string) at.Response {
	t.Helper()
	resp, err := r.e.Command(context.Background(), cmd, 0)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return resp
}

func waitURC(t *testing.T, e *at.Engine, prefix string) at.URC {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case u, ok := <-e.URCs():
			if !ok {
				t.Fatalf("URC channel closed waiting for %s", prefix)
			}
			if strings.HasPrefix(u.Line, prefix) {
				return u
			}
		case <-deadline:
			t.Fatalf("no URC %s", prefix)
		}
	}
}

func waitEvent(t *testing.T, e *at.Engine, typ at.EventType) at.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-e.Events():
			if ev.Type == typ {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event", typ)
		}
	}
}

func TestCommandWithEcho(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{})
	// Echo is on at power-up: the engine must drop it, not return it.
	resp := r.cmd(t, "AT+CSQ")
	if !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) || resp.Final != "OK" {
		t.Fatalf("got %+v", resp)
	}
	r.cmd(t, "ATE0")
	resp = r.cmd(t, "AT+CGSN")
	if !slices.Equal(resp.Lines, []string{"356938035643809"}) {
		t.Fatalf("bare IMEI line: got %+v", resp)
	}
}

func TestURCInterleavedWithResponse(t *testing.T) {
	r := newRig(t, kestrel.ProfileTETRA, at.Options{
		URCPrefixes:  []string{"+CREG", "+CTSDSR:"},
		URCDataLines: map[string]int{"+CTSDSR": 1},
	})
	r.m.Script("AT+CSQ?",
		atmodem.Lines("+CREG: 1,1001,23426"),
		atmodem.Default(),
		atmodem.Lines("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "8003"),
		atmodem.Final("OK"))
	resp := r.cmd(t, "AT+CSQ?")
	if !slices.Equal(resp.Lines, []string{"+CSQ: 20,99"}) {
		t.Fatalf("response lines %q, want only +CSQ", resp.Lines)
	}
	u := waitURC(t, r.e, "+CREG")
	if u.Prefix != "+CREG" || u.Params != "1,1001,23426" {
		t.Fatalf("URC %+v", u)
	}
	u = waitURC(t, r.e, "+CTSDSR")
	if !slices.Equal(u.Data, []string{"8003"}) {
		t.Fatalf("+CTSDSR data %q, want [8003]", u.Data)
	}
}

func TestURCBodyMissing(t *testing.T) {
	// A +CTSDSR header whose data line never comes must not swallow the
	// OK of the command in flight.
	r := newRig(t, kestrel.ProfileTETRA, at.Options{
		URCPrefixes: []string{"+CTSDSR"}, URCDataLines: map[string]int{"+CTSDSR": 1},
	})
	r.m.Script("AT+CTOM?", atmodem.Default(), atmodem.Lines("+CTSDSR: 13,1,0,2,0,16"), atmodem.Final("OK"))
	resp := r.cmd(t, "AT+CTOM?")
	if !slices.Equal(resp.Lines, []string{"+CTOM: 0"}) {
		t.Fatalf("got %q", resp.Lines)
	}
	if u := waitURC(t, r.e, "+CTSDSR"); len(u.Data) != 0 {
		t.Fatalf("data %q", u.Data)
	}
}

func TestCommandPrefixBeatsURCPrefix(t *testing.T) {
	// +CREG is a URC, but while AT+CREG? is in flight its +CREG line is the
	// answer.
	r := newRig(t, kestrel.ProfileTETRA, at.Options{URCPrefixes: []string{"+CREG"}})
	resp := r.cmd(t, "AT+CREG?")
	if !slices.Equal(resp.Lines, []string{"+CREG: 0,1,1001,23426"}) {
		t.Fatalf("got %q", resp.Lines)
	}
}

func TestSplitWrites(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{})
	r.m.Script("AT+CSQ",
		atmodem.Raw("\r\n+CS"), atmodem.Delay(20*time.Millisecond),
		atmodem.Raw("Q: 5,99\r\n\r\nO"), atmodem.Delay(20*time.Millisecond),
		atmodem.Raw("K\r\n"))
	resp := r.cmd(t, "AT+CSQ")
	if !slices.Equal(resp.Lines, []string{"+CSQ: 5,99"}) {
		t.Fatalf("got %q", resp.Lines)
	}
}

func TestErrors(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{})
	if _, err := r.e.Command(context.Background(), "AT+NOPE", 0); !errors.Is(err, at.ErrError) {
		t.Fatalf("plain ERROR: got %v", err)
	}
	r.cmd(t, "AT+CMEE=1")
	_, err := r.e.Command(context.Background(), "AT+NOPE", 0)
	var cme *at.CMEError
	if !errors.As(err, &cme) || cme.Code != 4 {
		t.Fatalf("numeric +CME ERROR: got %v", err)
	}
	r.cmd(t, "AT+CMEE=2")
	_, err = r.e.Command(context.Background(), "AT+NOPE", 0)
	if !errors.As(err, &cme) || cme.Code != -1 || cme.Text != "operation not supported" {
		t.Fatalf("verbose +CME ERROR: got %v", err)
	}
	r.m.Script("AT+CMGS", atmodem.Final("+CMS ERROR: 500"))
	_, err = r.e.Command(context.Background(), "AT+CMGS=1", 0)
	var cms *at.CMSError
	if !errors.As(err, &cms) || cms.Code != 500 {
		t.Fatalf("+CMS ERROR: got %v", err)
	}
}

func TestTimeoutAndLateReply(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{URCPrefixes: []string{"+CEREG"}})
	written := make(chan struct{})
	r.m.Script("AT+CEREG?", atmodem.Delay(150*time.Millisecond), atmodem.Default(), atmodem.Final("OK"), atmodem.Notify(written))
	_, err := r.e.Command(context.Background(), "AT+CEREG?", 100*time.Millisecond)
	if !errors.Is(err, at.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	<-written
	resp := r.cmd(t, "AT+CSQ")
	if !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("next command got %q", resp.Lines)
	}
	// The late "+CEREG: 0,1" must not have passed as a URC.
	select {
	case u := <-r.e.URCs():
		t.Fatalf("late reply delivered as URC %q", u.Line)
	default:
	}
}

func TestLateReplyAfterQuietPeriod(t *testing.T) {
	// The reply comes before the next command goes out, while the engine
	// waits for the line to settle: the next command still gets its own.
	r := newRig(t, kestrel.ProfileLTE, at.Options{ResyncQuiet: 300 * time.Millisecond})
	r.m.Script("AT+CESQ", atmodem.Delay(150*time.Millisecond), atmodem.Lines("+CESQ: 99,99,255,255,1,1"), atmodem.Final("OK"))
	if _, err := r.e.Command(context.Background(), "AT+CESQ", 50*time.Millisecond); !errors.Is(err, at.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	resp := r.cmd(t, "AT+CSQ") // sent at once, but held until the late OK
	if !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("next command got %q", resp.Lines)
	}
}

func TestLateReplyAfterNextCommandSent(t *testing.T) {
	// No quiet period: the next command goes out before the late reply,
	// and the modem answers both in order. The late OK must not answer it.
	r := newRig(t, kestrel.ProfileLTE, at.Options{ResyncQuiet: time.Millisecond})
	r.m.Script("AT+COPS?", atmodem.Delay(200*time.Millisecond), atmodem.Default(), atmodem.Final("OK"))
	if _, err := r.e.Command(context.Background(), "AT+COPS?", 50*time.Millisecond); !errors.Is(err, at.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	resp := r.cmd(t, "AT+CSQ")
	if !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("got %q, want the CSQ answer alone", resp.Lines)
	}
	resp = r.cmd(t, "AT+CESQ")
	if !slices.Equal(resp.Lines, []string{"+CESQ: 99,99,255,255,20,45"}) {
		t.Fatalf("then got %q", resp.Lines)
	}
}

func TestDroppedCommand(t *testing.T) {
	// The modem never answers one command.
	r := newRig(t, kestrel.ProfileLTE, at.Options{ResyncQuiet: time.Millisecond})
	drop := func() {
		t.Helper()
		r.m.Script("AT+CESQ", atmodem.NoAnswer())
		if _, err := r.e.Command(context.Background(), "AT+CESQ", 50*time.Millisecond); !errors.Is(err, at.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
	}
	// With echo on, the next command's echo shows that what follows is
	// its own: no cost.
	drop()
	if resp := r.cmd(t, "AT+CSQ"); !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("echo on: got %q", resp.Lines)
	}
	// With echo off, the engine first takes the next OK for the late one;
	// when that costs a timeout it starts afresh.
	r.cmd(t, "ATE0")
	drop()
	if _, err := r.e.Command(context.Background(), "AT+CSQ", 300*time.Millisecond); !errors.Is(err, at.ErrTimeout) {
		t.Fatalf("echo off: got %v, want the one extra timeout", err)
	}
	if resp := r.cmd(t, "AT+CSQ"); !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("echo off, after: got %q", resp.Lines)
	}
}

func TestSilentThenRecovered(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{Init: []string{"ATE0", "AT+CMEE=1"}, SilentAfter: 2})
	if err := r.e.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.m.SetSilent(true)
	for range 2 {
		if _, err := r.e.Command(context.Background(), "AT", 80*time.Millisecond); !errors.Is(err, at.ErrTimeout) {
			t.Fatalf("got %v, want timeout", err)
		}
	}
	waitEvent(t, r.e, at.EventSilent)
	if !r.e.Silent() {
		t.Fatal("engine not marked silent")
	}
	r.m.SetSilent(false)
	r.cmd(t, "AT")
	ev := waitEvent(t, r.e, at.EventReinit)
	if ev.Err != nil {
		t.Fatalf("reinit failed: %v", ev.Err)
	}
	cmds := r.m.Commands()
	if n := count(cmds, "ATE0"); n != 2 {
		t.Fatalf("ATE0 sent %d times, want 2 (init and re-init): %q", n, cmds)
	}
}

func TestRebootBanner(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{
		Init:        []string{"ATE0", "AT+CEREG=2"},
		BootBanners: []string{"RDY"},
	})
	if err := r.e.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.m.Reboot(50*time.Millisecond, "RDY")
	waitEvent(t, r.e, at.EventReboot)
	if ev := waitEvent(t, r.e, at.EventReinit); ev.Err != nil {
		t.Fatalf("reinit: %v", ev.Err)
	}
	// The re-init turned CEREG URCs back on: the modem must report them.
	r.m.RegistrationURC()
	u := waitURC(t, r.e, "+CEREG")
	if u.Params != `1,"00C3","0A1B2C3D",7` {
		t.Fatalf("URC after re-init: %q", u.Line)
	}
}

func TestRebootSeenByEcho(t *testing.T) {
	// No banner: the only sign is that echo is back after ATE0.
	r := newRig(t, kestrel.ProfileLTE, at.Options{Init: []string{"ATE0"}})
	if err := r.e.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.m.Reboot(20*time.Millisecond, "")
	time.Sleep(100 * time.Millisecond)
	r.cmd(t, "AT+CSQ") // echoed: the modem forgot ATE0
	ev := waitEvent(t, r.e, at.EventReboot)
	if !strings.Contains(ev.Reason, "echo") {
		t.Fatalf("reason %q", ev.Reason)
	}
	waitEvent(t, r.e, at.EventReinit)
}

func TestQueueSerialises(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{})
	cmds := []string{"AT+CSQ", "AT+CESQ", "AT+COPS?", "AT+CGSN", "AT+CCID"}
	want := []string{"+CSQ:", "+CESQ:", "+COPS:", "356938035643809", "+CCID:"}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % len(cmds)
			resp, err := r.e.Command(context.Background(), cmds[k], 2*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if len(resp.Lines) != 1 || !strings.HasPrefix(resp.Lines[0], want[k]) {
				errs <- errors.New(cmds[k] + " got " + strings.Join(resp.Lines, "|"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRunStopsOnPortLoss(t *testing.T) {
	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	port, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	e := at.NewEngine(port, at.Options{})
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	m.Close() // unplugged
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want a read error", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return on hang-up")
	}
	if _, err := e.Command(context.Background(), "AT", time.Second); !errors.Is(err, at.ErrClosed) {
		t.Fatalf("command after stop: %v", err)
	}
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// TestStopsWithSerialPort runs the engine over go.bug.st/serial, the port
// the agent opens, and checks that cancelling stops Run without the port
// being closed first (the agent closes it after Run returns).
func TestStopsWithSerialPort(t *testing.T) {
	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	port, err := serial.Open(m.Path(), &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Skipf("go.bug.st/serial cannot open a pty here: %v", err)
	}
	defer port.Close()
	e := at.NewEngine(port, at.Options{DefaultTimeout: 3 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	resp, err := e.Command(ctx, "AT+CGSN", 0)
	if err != nil || len(resp.Lines) != 1 || resp.Lines[0] != "356938035643809" {
		t.Fatalf("over go.bug.st/serial: %+v, %v", resp, err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop on cancel with the port still open")
	}
}

// BenchmarkRoundTrip is one AT+CSQ through the engine and a simulated
// modem over a pty; BenchmarkRoundTripBare is the same exchange with a
// bare write and read loop, the floor the engine is measured against.
func BenchmarkRoundTrip(b *testing.B) {
	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	port, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer port.Close()
	e := at.NewEngine(port, at.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	if _, err := e.Command(ctx, "ATE0", 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Command(ctx, "AT+CSQ", 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRoundTripBare(b *testing.B) {
	m, err := atmodem.New(kestrel.ProfileLTE)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	port, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer port.Close()
	buf := make([]byte, 256)
	exchange := func(cmd string) {
		if _, err := port.WriteString(cmd); err != nil {
			b.Fatal(err)
		}
		var got []byte
		for !bytes.Contains(got, []byte("OK\r\n")) {
			n, err := port.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
	}
	exchange("ATE0\r")
	b.ReportAllocs()
	for b.Loop() {
		exchange("AT+CSQ\r")
	}
}

// runaway is a modem step that answers with n information lines, then
// final ("" for none: it never stops on its own).
func runaway(n int, final string) atmodem.Step {
	return func(m *atmodem.Modem, _ string) {
		for i := range n {
			m.URC(fmt.Sprintf("+COPS: (2,\"operator %d\",\"OP%d\",\"23415\",7)", i, i))
		}
		if final != "" {
			m.URC(final)
		}
	}
}

// TestRunawayResponseBounded: a modem that answers one command with
// thousands of lines gets MaxResponseLines of them kept and a typed error,
// and the engine carries on with the next command.
func TestRunawayResponseBounded(t *testing.T) {
	r := newRig(t, kestrel.ProfileLTE, at.Options{})
	r.m.Script("AT+COPS=?", runaway(3000, "OK"))
	resp, err := r.e.Command(context.Background(), "AT+COPS=?", 10*time.Second)
	if !errors.Is(err, at.ErrTooManyLines) {
		t.Fatalf("3000-line answer: %v, want ErrTooManyLines", err)
	}
	if len(resp.Lines) != at.MaxResponseLines || resp.Final != "OK" || !strings.Contains(resp.Lines[0], "operator 0\"") {
		t.Fatalf("kept %d lines, final %q", len(resp.Lines), resp.Final)
	}
	if resp := r.cmd(t, "AT+CSQ"); !slices.Equal(resp.Lines, []string{"+CSQ: 18,99"}) {
		t.Fatalf("next command after the runaway: %+v", resp)
	}

	// One that never sends a final result code: the timeout ends it, and
	// the error says both.
	r.m.Script("AT+COPS=?", runaway(3000, ""))
	resp, err = r.e.Command(context.Background(), "AT+COPS=?", 2*time.Second)
	if !errors.Is(err, at.ErrTooManyLines) || !errors.Is(err, at.ErrTimeout) || len(resp.Lines) != at.MaxResponseLines {
		t.Fatalf("endless answer: %v with %d lines, want ErrTooManyLines and ErrTimeout", err, len(resp.Lines))
	}
}

// TestFloodWarningsRateLimited: a modem flooding URCs that nobody reads,
// and over-long lines, costs one warning each per minute (with the
// counts), not one per line; and no warning carries the line's text.
func TestFloodWarningsRateLimited(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var logs logbuf.Buffer
	r := newRig(t, kestrel.ProfileLTE, at.Options{URCBuffer: 1, Now: clock,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	flood := func() {
		for range 200 {
			r.m.URC("+XPRIVATE: officer-note-42")
		}
		for range 20 {
			r.m.URC(strings.Repeat("Z", 5000))
		}
		r.cmd(t, "AT") // answered after the flood: all of it has been read
	}
	flood()
	drops, long := logs.Lines("URC dropped"), logs.Lines("line too long")
	if len(drops) != 1 || len(long) != 1 {
		t.Fatalf("after a flood: %d URC-drop and %d long-line warnings, want 1 each:\n%s", len(drops), len(long), logs.String())
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	flood()
	drops, long = logs.Lines("URC dropped"), logs.Lines("line too long")
	if len(drops) != 2 || len(long) != 2 {
		t.Fatalf("a minute later: %d and %d warnings, want 2 each", len(drops), len(long))
	}
	if !strings.Contains(drops[1], "dropped=200 not_logged=198") || !strings.Contains(long[1], "count=21 not_logged=19") {
		t.Errorf("counts missing:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "officer-note") || strings.Contains(logs.String(), "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ") {
		t.Errorf("a warning carries the modem's text:\n%s", logs.String())
	}
}
