package radio_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/drivers/radio"
	"github.com/kestrel-edge/kestrel/hwtest/atmodem"
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
		TAC: 1001, Operator: "23426",
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
		IMEI: "356938035643809", ICCID: "8944110068256270054",
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
	cmds := r.m.Commands()
	n := 0
	for _, c := range cmds {
		if c == "AT+CEREG=2" {
			n++
		}
	}
	if n < 2 {
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
