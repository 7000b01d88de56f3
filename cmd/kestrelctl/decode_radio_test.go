package main

import (
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// kestrelctl decode tells the registration states apart, emergency only
// included, and prints the operator format and the ICCID check.
func TestDecodeRadioStates(t *testing.T) {
	var recs []kestrel.Record
	for i, st := range []kestrel.RegState{kestrel.RegNotRegistered, kestrel.RegHome, kestrel.RegEmergencyOnly, kestrel.RegRLOS, 90} {
		recs = append(recs, kestrel.Record{
			Envelope: kestrel.Envelope{Boot: 2, Seq: uint64(i), Time: 1560938662000, Priority: kestrel.PriorityNormal},
			Body: &kestrel.RadioStatus{Profile: kestrel.ProfileLTE, Registered: st, Online: true, RegSource: kestrel.RegSourceCEREG,
				Operator: "46000", OperatorFormat: kestrel.OperatorNumeric, AccessTech: 7,
				ICCID: "8944200053671052499", ICCIDInvalid: true, RejectedLines: 2}})
	}
	var enc wire.Encoder
	b, err := enc.AppendBatch(nil, "bwc-9", recs)
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := wireTestRun(t, string(b), "decode")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{`"registered":0,"reg_state":"not_registered"`, `"registered":1,"reg_state":"home"`,
		`"registered":8,"reg_state":"emergency_only"`, `"registered":11,"reg_state":"rlos"`, `"registered":90,"reg_state":"stat_90"`}
	if len(lines) != len(want) {
		t.Fatalf("got\n%s", out)
	}
	for i, w := range want {
		for _, s := range []string{w, `"reg_source":"cereg"`, `"operator":"46000","operator_format":"numeric"`,
			`"iccid":"8944200053671052499","iccid_invalid":true`, `"rejected_lines":2`} {
			if !strings.Contains(lines[i], s) {
				t.Errorf("line %d lacks %s:\n%s", i, s, lines[i])
			}
		}
	}
}
