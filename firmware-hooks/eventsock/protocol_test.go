package eventsock

import (
	"strconv"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Message
	}{
		{"emergency\n", Message{Type: kestrel.EventEmergency, Priority: kestrel.PriorityEmergency}},
		{"emergency name=button\r\n", Message{Type: kestrel.EventEmergency, Priority: kestrel.PriorityEmergency, Name: "button"}},
		{"  tamper\tname=case  value=-3 ", Message{Type: kestrel.EventTamper, Priority: kestrel.PriorityHigh, Name: "case", Value: -3}},
		{`battery_critical value=4 text="cell 2 \"low\"\n\\ok" time=1764172800123`, Message{
			Type: kestrel.EventBatteryCritical, Priority: kestrel.PriorityNormal, Value: 4,
			Text: "cell 2 \"low\"\n\\ok", Time: 1764172800123}},
		{`taser text="Ünïcode ✓"`, Message{Type: kestrel.EventTaser, Priority: kestrel.PriorityHigh, Text: "Ünïcode ✓"}},
		{`docked name=""`, Message{Type: kestrel.EventDocked, Priority: kestrel.PriorityNormal}},
		{"recording_start", Message{Type: kestrel.EventRecordingStart, Priority: kestrel.PriorityNormal}},
		{"recording_stop", Message{Type: kestrel.EventRecordingStop, Priority: kestrel.PriorityNormal}},
		{"undocked", Message{Type: kestrel.EventUndocked, Priority: kestrel.PriorityNormal}},
		{"holster name=left", Message{Type: kestrel.EventHolster, Priority: kestrel.PriorityNormal, Name: "left"}},
	} {
		got, err := ParseLine([]byte(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseLineRejects(t *testing.T) {
	for in, wantErr := range map[string]string{
		"security":                                   "unknown event type",
		"gps_state":                                  "unknown event type",
		"EMERGENCY":                                  "must start with an event type",
		"emergency foo=1":                            "unknown key",
		"emergency name=a name=b":                    "given twice",
		"emergency name":                             "want key=value",
		"emergency name=":                            "empty",
		"emergency value=1.5":                        "not a decimal integer",
		"emergency value=99999999999999999999":       "not a decimal integer",
		"emergency time=-1":                          "milliseconds",
		"emergency time=999999999999999":             "milliseconds",
		`emergency text="open`:                       "unterminated",
		`emergency text="a"b`:                        "white space after",
		`emergency text="\x"`:                        "unknown escape",
		"emergency text=\"a\x01\"":                   "control byte",
		"emergency text=\"\xff\"":                    "UTF-8",
		"emergency name=a\"b":                        "needs quoting",
		"emergency name=" + strings.Repeat("x", 65):  "longer than 64",
		"emergency text=" + strings.Repeat("x", 513): "longer than 512",
		"emergency " + strings.Repeat("x", MaxLine):  "too long",
		"emergency\x00":                              "must start with an event type",
	} {
		_, err := ParseLine([]byte(in))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseLine(%.40q): %v, want %q", in, err, wantErr)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("ParseLine(%.40q): error %q would break the reply line", in, err)
		}
	}
	if _, err := ParseLine([]byte(" \t\r\n")); err != errBlank {
		t.Errorf("blank line: %v", err)
	}
}

func TestFormatLineRoundTrip(t *testing.T) {
	kv := map[string]string{"text": "two words \"quoted\"\tand\\more\n", "name": "btn", "value": "7"}
	line, err := FormatLine("emergency", kv)
	if err != nil {
		t.Fatal(err)
	}
	if want := `emergency name=btn text="two words \"quoted\"\tand\\more\n" value=7` + "\n"; line != want {
		t.Errorf("got %q\nwant %q", line, want)
	}
	m, err := ParseLine([]byte(line))
	if err != nil || m.Text != kv["text"] || m.Name != "btn" || m.Value != 7 {
		t.Errorf("round trip: %+v %v", m, err)
	}
	if _, err := FormatLine("emergency", map[string]string{"bogus": "1"}); err == nil {
		t.Error("unknown key formatted")
	}
	if _, err := FormatLine("", nil); err == nil {
		t.Error("empty type formatted")
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"emergency\n", "tamper name=case value=-3\r\n",
		`battery_critical value=4 text="cell \"2\" \\ \n" time=1764172800123`,
		`taser text="Ünïcode ✓"`, "docked name=\"\"", "emergency text=\"", "\xff\xfe", "", " \t",
		"emergency name=a name=b", "holster value=9223372036854775807",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseLine(in)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error with a line break: %q", err)
			}
			return
		}
		// What was accepted must survive a trip through FormatLine.
		kv := map[string]string{}
		if m.Name != "" {
			kv["name"] = m.Name
		}
		if m.Text != "" {
			kv["text"] = m.Text
		}
		if m.Value != 0 {
			kv["value"] = strconv.FormatInt(m.Value, 10)
		}
		if m.Time != 0 {
			kv["time"] = strconv.FormatInt(m.Time, 10)
		}
		line, err := FormatLine(m.Type.String(), kv)
		if err != nil {
			t.Fatalf("accepted %q but cannot format %+v: %v", in, m, err)
		}
		m2, err := ParseLine([]byte(line))
		if err != nil || m2 != m {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", in, m, line, m2, err)
		}
		if _, ok := Types[m.Type.String()]; !ok {
			t.Fatalf("accepted type %v", m.Type)
		}
	})
}
