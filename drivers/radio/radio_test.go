package radio_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/radio"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
	"github.com/kestrel-edge/kestrel/hwtest/logbuf"
)

type rig struct {
	m    *atmodem.Modem
	recs chan kestrel.Record
}

// start runs a Radio against a simulated modem over a real pty.
func start(t *testing.T, p kestrel.RadioProfile, opts radio.Options, prep func(*atmodem.Modem)) *rig {
	t.Helper()
	m, err := atmodem.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(m)
	}
	port, err := os.OpenFile(m.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	if opts.Poll == 0 {
		opts.Poll = 50 * time.Millisecond
	}
	if opts.CommandTimeout == 0 {
		opts.CommandTimeout = time.Second // generous: a loaded CI machine stalls
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Hour
	}
	r := radio.New(port, p, opts)
	recs := make(chan kestrel.Record, 256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, func(rec kestrel.Record) { recs <- rec }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("Run did not stop")
		}
		port.Close()
		m.Close()
	})
	return &rig{m: m, recs: recs}
}

// next returns the first record that matches, failing after a few seconds.
func (r *rig) next(t *testing.T, what string, match func(kestrel.Record) bool) kestrel.Record {
	t.Helper()
	deadline := time.After(4 * time.Second)
	for {
		select {
		case rec := <-r.recs:
			if match(rec) {
				return rec
			}
		case <-deadline:
			t.Fatalf("no record: %s", what)
		}
	}
}

func status(match func(*kestrel.RadioStatus) bool) func(kestrel.Record) bool {
	return func(rec kestrel.Record) bool {
		s, ok := rec.Body.(*kestrel.RadioStatus)
		return ok && match(s)
	}
}

func event(typ kestrel.EventType) func(kestrel.Record) bool {
	return func(rec kestrel.Record) bool {
		e, ok := rec.Body.(*kestrel.Event)
		return ok && e.Type == typ
	}
}

// drain empties the record channel and returns what was in it.
func (r *rig) drain(wait time.Duration) []kestrel.Record {
	var out []kestrel.Record
	deadline := time.After(wait)
	for {
		select {
		case rec := <-r.recs:
			out = append(out, rec)
		case <-deadline:
			return out
		}
	}
}

func TestTETRAStatus(t *testing.T) {
	now := time.Date(2026, 11, 26, 16, 30, 0, 0, time.UTC)
	r := start(t, kestrel.ProfileTETRA, radio.Options{Now: func() time.Time { return now }}, nil)
	rec := r.next(t, "first TETRA status", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	got := *rec.Body.(*kestrel.RadioStatus)
	want := kestrel.RadioStatus{
		Profile: kestrel.ProfileTETRA, Registered: kestrel.RegHome, Online: true,
		RSSI: -73, BER: 99, Mode: kestrel.ModeTMO,
		Identity: "2342600012345", Talkgroup: "2342609001001",
		TAC: 1001, Operator: "23426", OperatorFormat: kestrel.OperatorNumeric, RegSource: kestrel.RegSourceCREG,
	}
	if got != want {
		t.Fatalf("status\n got %+v\nwant %+v", got, want)
	}
	if rec.Time != now.UnixMilli() || rec.Priority != kestrel.PriorityNormal {
		t.Fatalf("envelope %+v", rec.Envelope)
	}

	// A 2 dB move is inside the 3 dB hysteresis: no record.
	r.m.Set(func(s *atmodem.State) { s.RSSI = 21 })
	for _, rec := range r.drain(300 * time.Millisecond) {
		t.Fatalf("record for a 2 dB move: %+v", rec.Body)
	}
	// 4 dB from the last report: a record.
	r.m.Set(func(s *atmodem.State) { s.RSSI = 22 })
	r.next(t, "RSSI -69", status(func(s *kestrel.RadioStatus) bool { return s.RSSI == -69 }))

	// Registration lost, announced by URC (enabled by the driver's set-up).
	r.m.Set(func(s *atmodem.State) { s.Stat = 2 })
	r.m.RegistrationURC()
	r.next(t, "searching", status(func(s *kestrel.RadioStatus) bool { return s.Registered == kestrel.RegSearching }))

	// Officer switches to direct mode and another talkgroup.
	r.m.Set(func(s *atmodem.State) { s.Mode = 1; s.Talkgroup = "2342609001777" })
	r.next(t, "DMO", status(func(s *kestrel.RadioStatus) bool {
		return s.Mode == kestrel.ModeDMO && s.Talkgroup == "2342609001777"
	}))
}

func TestTETRAMessagesAndEmergencies(t *testing.T) {
	r := start(t, kestrel.ProfileTETRA, radio.Options{EmergencyStatus: []uint16{0, 65024}}, nil)
	r.next(t, "first status", status(func(s *kestrel.RadioStatus) bool { return s.Online }))

	// Emergency status arrives in the middle of a poll's response.
	r.m.Script("AT+CSQ?",
		atmodem.Default(),
		atmodem.Lines("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "0000"),
		atmodem.Final("OK"))
	rec := r.next(t, "emergency", event(kestrel.EventEmergency))
	ev := rec.Body.(*kestrel.Event)
	if rec.Priority != kestrel.PriorityEmergency || ev.Name != "2342600054321" || ev.Value != 0 || ev.Source != "radio" {
		t.Fatalf("emergency record %+v %+v", rec.Envelope, ev)
	}

	// A force-specific emergency status (0xFE00) and an ordinary one.
	r.m.URC("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "FE00")
	rec = r.next(t, "force emergency", event(kestrel.EventEmergency))
	if rec.Body.(*kestrel.Event).Value != 65024 {
		t.Fatalf("got %+v", rec.Body)
	}
	r.m.URC("+CTSDSR: 13,2342600054321,0,2342600012345,0,16", "8003")
	rec = r.next(t, "status message", event(kestrel.EventStatusMessage))
	if ev := rec.Body.(*kestrel.Event); ev.Value != 0x8003 || rec.Priority != kestrel.PriorityHigh {
		t.Fatalf("status %+v prio %v", ev, rec.Priority)
	}

	// SDS-TL text message (protocol 0x82, Latin-1).
	r.m.URC("+CTSDSR: 12,2342600054321,0,2342600012345,0,112", "82040801476A61746A616A676A61")
	rec = r.next(t, "sds", event(kestrel.EventSDS))
	if ev := rec.Body.(*kestrel.Event); ev.Text != "Gjatjajgja" || ev.Value != 0x82 || ev.Name != "2342600054321" {
		t.Fatalf("sds %+v", ev)
	}

	// Emergency transmit demand and an emergency group call.
	r.m.URC("+CTXD: 1,3")
	r.next(t, "emergency tx demand", event(kestrel.EventEmergency))
	r.m.URC("+CTICN: 2,0,0,1,2342600054321,1,1,0,0,0,1,2342609001001,15")
	rec = r.next(t, "emergency call", event(kestrel.EventEmergency))
	if ev := rec.Body.(*kestrel.Event); ev.Value != 15 || !strings.Contains(ev.Text, "2342609001001") {
		t.Fatalf("emergency call %+v", ev)
	}
	// A routine call is not an emergency.
	r.m.URC("+CTICN: 3,0,0,1,2342600054321,1,1,0,0,0,1,2342609001001,0")
	for _, rec := range r.drain(200 * time.Millisecond) {
		if e, ok := rec.Body.(*kestrel.Event); ok && e.Type == kestrel.EventEmergency {
			t.Fatalf("routine call reported as emergency: %+v", e)
		}
	}
}

func TestLTEStatus(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, nil)
	rec := r.next(t, "first LTE status", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	got := *rec.Body.(*kestrel.RadioStatus)
	want := kestrel.RadioStatus{
		Profile: kestrel.ProfileLTE, Registered: kestrel.RegHome, Online: true,
		RSSI: -77, BER: 99, RSRP: -96, RSRQ: -100,
		Operator: "EE", AccessTech: 7, TAC: 0x00C3, CellID: 0x0A1B2C3D,
		IMEI: "356938035643809", ICCID: "8944110068256270054", RegSource: kestrel.RegSourceCEREG,
	}
	if got != want {
		t.Fatalf("status\n got %+v\nwant %+v", got, want)
	}

	// Handover announced by a +CEREG URC in the middle of AT+CESQ's answer.
	r.m.Set(func(s *atmodem.State) { s.CI = "0A1B2C99"; s.TAC = "00C4" })
	r.m.Script("AT+CESQ",
		atmodem.Lines(`+CEREG: 5,"00C4","0A1B2C99",7`),
		atmodem.Default(),
		atmodem.Final("OK"))
	r.next(t, "new cell", status(func(s *kestrel.RadioStatus) bool {
		return s.CellID == 0x0A1B2C99 && s.TAC == 0xC4 && s.Registered == kestrel.RegRoaming
	}))

	// RSRP falls by 10 dB.
	r.m.Set(func(s *atmodem.State) { s.RSRP = 35 })
	r.next(t, "RSRP -106", status(func(s *kestrel.RadioStatus) bool { return s.RSRP == -106 }))
}

func TestHeartbeat(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{Heartbeat: 150 * time.Millisecond}, nil)
	first := r.next(t, "first", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	second := r.next(t, "heartbeat", status(func(s *kestrel.RadioStatus) bool { return true }))
	if *first.Body.(*kestrel.RadioStatus) != *second.Body.(*kestrel.RadioStatus) {
		t.Fatalf("heartbeat differs with nothing changed:\n%+v\n%+v", first.Body, second.Body)
	}
}

func TestSilentModemAndRecovery(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{SilentAfter: 2, CommandTimeout: 100 * time.Millisecond}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	r.m.SetSilent(true)
	r.next(t, "offline", status(func(s *kestrel.RadioStatus) bool { return !s.Online }))
	r.m.SetSilent(false)
	// The reset event and the status back online may come in either
	// order: the poll that finds the radio answering can beat the re-init.
	var reset *kestrel.Event
	online := false
	deadline := time.After(4 * time.Second)
	for reset == nil || !online {
		select {
		case rec := <-r.recs:
			switch b := rec.Body.(type) {
			case *kestrel.Event:
				if b.Type == kestrel.EventRadioReset {
					reset = b
				}
			case *kestrel.RadioStatus:
				online = online || (b.Online && b.RSRP == -96)
			}
		case <-deadline:
			t.Fatalf("after recovery: reset event %v, online status %v", reset != nil, online)
		}
	}
	if !strings.Contains(reset.Text, "silence") {
		t.Fatalf("reset text %q", reset.Text)
	}
}

func TestSilentFromStart(t *testing.T) {
	// A radio that never answers is reported offline rather than not at all.
	r := start(t, kestrel.ProfileTETRA, radio.Options{SilentAfter: 2, CommandTimeout: 80 * time.Millisecond},
		func(m *atmodem.Modem) { m.SetSilent(true) })
	rec := r.next(t, "offline", status(func(s *kestrel.RadioStatus) bool { return true }))
	if s := rec.Body.(*kestrel.RadioStatus); s.Online || s.Profile != kestrel.ProfileTETRA {
		t.Fatalf("got %+v", s)
	}
}

func TestRebootReinitialises(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	r.m.Reboot(100*time.Millisecond, "RDY")
	rec := r.next(t, "reset", event(kestrel.EventRadioReset))
	if ev := rec.Body.(*kestrel.Event); !strings.Contains(ev.Text, "RDY") {
		t.Fatalf("reset text %q", ev.Text)
	}
	// The driver turned +CEREG URCs back on: a registration change now
	// arrives by URC.
	r.m.Set(func(s *atmodem.State) { s.Stat = 3 })
	r.m.RegistrationURC()
	r.next(t, "denied", status(func(s *kestrel.RadioStatus) bool { return s.Registered == kestrel.RegDenied }))
	if n := countCmd(r.m.Commands(), "AT+CEREG=2"); n < 2 {
		t.Fatalf("AT+CEREG=2 sent %d times, want init and re-init", n)
	}
}

func TestTimeoutMidPollRecovers(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	r.m.Script("AT+CSQ", atmodem.NoAnswer())
	r.m.Set(func(s *atmodem.State) { s.RSSI = 5 })
	r.next(t, "RSSI after a lost answer", status(func(s *kestrel.RadioStatus) bool { return s.RSSI == -103 && s.Online }))
}

func TestParseProfile(t *testing.T) {
	for in, want := range map[string]kestrel.RadioProfile{"tetra": kestrel.ProfileTETRA, "LTE": kestrel.ProfileLTE} {
		if got, err := radio.ParseProfile(in); err != nil || got != want {
			t.Errorf("ParseProfile(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := radio.ParseProfile("gsm"); err == nil {
		t.Error("gsm accepted")
	}
}

func countCmd(cmds []string, c string) int {
	n := 0
	for _, x := range cmds {
		if x == c {
			n++
		}
	}
	return n
}

// A modem without +CEREG (a 2G/3G module) is read through +CGREG and
// +CREG; commands it rejects stop being polled.
func TestLTEFallbackToCGREGAndCREG(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, func(m *atmodem.Modem) {
		m.Set(func(s *atmodem.State) {
			s.RegCmds = []string{"+CREG", "+CGREG"}
			s.RegStat = map[string]int{"+CREG": 1, "+CGREG": 2}
			s.AcT = 2 // UTRAN
		})
	})
	rec := r.next(t, "registered through +CREG", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	s := rec.Body.(*kestrel.RadioStatus)
	if s.Registered != kestrel.RegHome || s.RegSource != kestrel.RegSourceCREG || s.TAC != 0xC3 || s.CellID != 0x0A1B2C3D || s.AccessTech != 2 {
		t.Fatalf("status %+v", *s)
	}
	// The packet domain registers (roaming): in service like +CREG, and
	// +CGREG is the newer system, so it is the one shown.
	r.m.Set(func(s *atmodem.State) { s.RegStat["+CGREG"] = 5 })
	r.next(t, "registered through +CGREG", status(func(s *kestrel.RadioStatus) bool {
		return s.Registered == kestrel.RegRoaming && s.RegSource == kestrel.RegSourceCGREG
	}))
	r.drain(200 * time.Millisecond)
	cmds := r.m.Commands()
	if n := countCmd(cmds, "AT+CEREG?"); n != 1 {
		t.Errorf("AT+CEREG? sent %d times; want once, then dropped as unsupported", n)
	}
	if n := countCmd(cmds, "AT+C5GREG?"); n != 0 {
		t.Errorf("AT+C5GREG? sent %d times though AT+C5GREG=2 was rejected", n)
	}
	if countCmd(cmds, "AT+CREG?") < 2 || countCmd(cmds, "AT+CGREG=2") != 1 {
		t.Errorf("commands %q", cmds)
	}
}

// A 5G modem registered on 5GS but not on EPS reports the 5GS state.
func TestLTEC5GREG(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, func(m *atmodem.Modem) {
		m.Set(func(s *atmodem.State) {
			s.RegCmds = []string{"+CEREG", "+C5GREG"}
			s.RegStat = map[string]int{"+CEREG": 0, "+C5GREG": 1}
			s.AcT = 11 // NR connected to a 5GCN
		})
	})
	rec := r.next(t, "5GS", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	if s := rec.Body.(*kestrel.RadioStatus); s.Registered != kestrel.RegHome || s.RegSource != kestrel.RegSourceC5GREG || s.AccessTech != 11 {
		t.Fatalf("status %+v", *s)
	}
	// 5GS lost: the unit is down to emergency services over EPS.
	r.m.URC(`+C5GREG: 0`, `+CEREG: 2,8,"8B37","0A265185",7`)
	rec = r.next(t, "emergency only", status(func(s *kestrel.RadioStatus) bool { return s.Registered == kestrel.RegEmergencyOnly }))
	if s := rec.Body.(*kestrel.RadioStatus); s.RegSource != kestrel.RegSourceCEREG || s.TAC != 0x8B37 || s.CellID != 0x0A265185 || s.AccessTech != 7 {
		t.Fatalf("status %+v", *s)
	}
}

// Lines that fit no known layout store nothing and are counted; known
// variants and states outside the table are read.
func TestLTEVariantsAndRefusals(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))

	// Qualcomm Gobi 1000's garbled LAC, as the answer to a poll, and an
	// AcT outside the table by URC: refused, nothing changes.
	r.m.Script("AT+CEREG?", atmodem.Lines(`+CEREG: 2,1,  0 5, 2715`), atmodem.Final("OK"))
	r.m.URC(`+CEREG: 1,"1F00","79D903",100`)
	for _, rec := range r.drain(300 * time.Millisecond) {
		if s, ok := rec.Body.(*kestrel.RadioStatus); ok {
			t.Fatalf("a refused line made a record: %+v", *s)
		}
	}
	// Novatel E362's +CEREG with a routing area: the cell is the cell.
	// (The simulated modem's polled state moves with each URC, as a real
	// modem's does.)
	r.m.Set(func(s *atmodem.State) { s.TAC, s.CI = "1F00", "0079D903" })
	r.m.URC(`+CEREG: 1, 1F00, 20 ,79D903 ,7`)
	rec := r.next(t, "E362 cell", status(func(s *kestrel.RadioStatus) bool { return s.CellID == 0x79D903 }))
	s := rec.Body.(*kestrel.RadioStatus)
	if s.TAC != 0x1F00 || s.RejectedLines != 2 {
		t.Fatalf("status %+v", *s)
	}
	// Altair's read form sent as a URC: searching, with location.
	r.m.Set(func(s *atmodem.State) { s.Stat, s.TAC, s.CI = 2, "0001", "00000100" })
	r.m.URC(`+CEREG: 1, 2, 0001, 00000100, 7`)
	rec = r.next(t, "Altair", status(func(s *kestrel.RadioStatus) bool { return s.Registered == kestrel.RegSearching }))
	if s := rec.Body.(*kestrel.RadioStatus); s.TAC != 1 || s.CellID != 0x100 || s.AccessTech != 7 {
		t.Fatalf("status %+v", *s)
	}
	// State 11 keeps the rest of the report; an unknown state is kept raw.
	r.m.Set(func(s *atmodem.State) { s.Stat, s.TAC, s.CI = 11, "78FE", "0014419E" })
	r.m.URC(`+CEREG: 11,"78FE","0014419E",7`)
	r.next(t, "RLOS", status(func(s *kestrel.RadioStatus) bool {
		return s.Registered == kestrel.RegRLOS && s.TAC == 0x78FE && s.CellID == 0x14419E && s.AccessTech == 7
	}))
	r.m.Set(func(s *atmodem.State) { s.Stat = 90 })
	r.m.URC(`+CEREG: 90`)
	rec = r.next(t, "raw 90", status(func(s *kestrel.RadioStatus) bool { return s.Registered == 90 }))
	if s := rec.Body.(*kestrel.RadioStatus); s.RSRP != -96 || s.RSSI != -77 || s.IMEI == "" {
		t.Fatalf("status %+v", *s)
	}
}

// An unsolicited +CEREG that arrives inside the answer to AT+CEREG? is
// read as what it is, not as the answer.
func TestLTEURCInsideReadAnswer(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	r.m.Set(func(s *atmodem.State) { s.CI = "0A1B2C99"; s.TAC = "00C4"; s.Stat = 5 })
	r.m.Script("AT+CEREG?",
		atmodem.Lines(`+CEREG: 5,"00C4","0A1B2C99",7`),
		atmodem.Default(),
		atmodem.Final("OK"))
	rec := r.next(t, "handover", status(func(s *kestrel.RadioStatus) bool { return s.CellID == 0x0A1B2C99 }))
	if s := rec.Body.(*kestrel.RadioStatus); s.Registered != kestrel.RegRoaming || s.TAC != 0xC4 || s.RejectedLines != 0 {
		t.Fatalf("status %+v", *s)
	}
}

func TestLTEOperatorFormatAndICCID(t *testing.T) {
	r := start(t, kestrel.ProfileLTE, radio.Options{}, func(m *atmodem.Modem) {
		m.Set(func(s *atmodem.State) {
			s.Operator, s.OperFormat = "46000", 2
			s.ICCID = "8944200053671052499F" // ModemManager's vector: filler F, fails Luhn
		})
	})
	rec := r.next(t, "first", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	s := rec.Body.(*kestrel.RadioStatus)
	if s.Operator != "46000" || s.OperatorFormat != kestrel.OperatorNumeric {
		t.Fatalf("operator %q format %v", s.Operator, s.OperatorFormat)
	}
	if s.ICCID != "8944200053671052499" || !s.ICCIDInvalid {
		t.Fatalf("ICCID %q invalid %v", s.ICCID, s.ICCIDInvalid)
	}
}

func TestLTEICCIDFillerSameSIM(t *testing.T) {
	// The same SIM read by a modem that prints the filler and one that
	// does not gives the same ICCID.
	var got []string
	for _, raw := range []string{"8944110068256270054F", "8944110068256270054"} {
		r := start(t, kestrel.ProfileLTE, radio.Options{}, func(m *atmodem.Modem) {
			m.Set(func(s *atmodem.State) { s.ICCID = raw })
		})
		rec := r.next(t, "first", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
		s := rec.Body.(*kestrel.RadioStatus)
		if s.ICCIDInvalid {
			t.Errorf("%s flagged invalid", raw)
		}
		got = append(got, s.ICCID)
	}
	if got[0] != got[1] || got[0] != "8944110068256270054" {
		t.Fatalf("ICCIDs %q", got)
	}
}

// steppedClock is a clock the test moves.
type steppedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *steppedClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *steppedClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRefusedLinesLogThinned: a radio repeating lines that no parser takes
// costs one warning a minute with the counts, not one per line, and the
// warning shows the line's length and first bytes, not the line.
func TestRefusedLinesLogThinned(t *testing.T) {
	var logs logbuf.Buffer
	clock := &steppedClock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	r := start(t, kestrel.ProfileLTE, radio.Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	r.next(t, "online", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	cell := 0x79D900
	flood := func() {
		for range 100 {
			r.m.URC(`+CEREG: 1,"1F00","79D903",100` + strings.Repeat(" ", 200) + "TAILTEXT")
		}
		// A change behind the flood: once it is reported, the flood has
		// been read.
		cell++
		ci := fmt.Sprintf("%08X", cell)
		r.m.Set(func(s *atmodem.State) { s.TAC, s.CI = "1F00", ci })
		r.m.URC(`+CEREG: 1,"1F00","` + ci + `",7`)
		want := uint64(cell)
		r.next(t, "cell after the flood", status(func(s *kestrel.RadioStatus) bool { return s.CellID == want }))
	}
	flood()
	if n := strings.Count(logs.String(), "radio line refused"); n != 1 {
		t.Fatalf("100 refused lines: %d warnings, want 1:\n%s", n, logs.String())
	}
	clock.add(61 * time.Second)
	flood()
	out := logs.String()
	// A line that lands inside a poll's answer is refused with that
	// answer, so the count may be under 101; the skipped ones are counted.
	m := regexp.MustCompile(`radio line refused.* count=(\d+) not_logged=(\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		t.Fatalf("a minute later: %d warnings, want 2:\n%s", len(m), out)
	}
	total, _ := strconv.Atoi(m[1][1])
	skipped, _ := strconv.Atoi(m[1][2])
	if total < 3 || skipped != total-2 {
		t.Errorf("second warning: count %d, not_logged %d", total, skipped)
	}
	if strings.Contains(out, "TAILTEXT") || !strings.Contains(out, "bytes=237") {
		t.Errorf("the warning carries the line, or not its length:\n%s", out)
	}
}

// TestUnreadableSDSNotLogged: the user data of a TETRA SDS message that
// cannot be decoded never reaches the log (it may be personal data), and a
// flood of them costs one warning a minute.
func TestUnreadableSDSNotLogged(t *testing.T) {
	var logs logbuf.Buffer
	clock := &steppedClock{now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	r := start(t, kestrel.ProfileTETRA, radio.Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	r.next(t, "first status", status(func(s *kestrel.RadioStatus) bool { return s.Online }))
	for range 50 {
		// Not hex: undecodable user data.
		r.m.URC("+CTSDSR: 12,2342600054321,0,2342600012345,0,112", "meet-informant-at-9pm")
	}
	r.m.URC("+CTSDSR: 12,2342600054321,0,2342600012345,0,112", "82040801476A61746A616A676A61")
	r.next(t, "sds after the flood", event(kestrel.EventSDS))
	out := logs.String()
	if n := strings.Count(out, "unreadable +CTSDSR"); n != 1 {
		t.Fatalf("50 unreadable SDS: %d warnings, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "informant") || strings.Contains(out, "2342600012345") {
		t.Errorf("an SDS message or its parties reached the log:\n%s", out)
	}
}
