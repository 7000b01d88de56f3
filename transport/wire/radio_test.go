package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// A radio status with every field the issue-22 change added: the
// registration state as reported (8, emergency only), its source, a 36-bit
// NR cell, the operator format, a flagged ICCID and the refusal counter.
func TestRadioStatusFieldsRoundTrip(t *testing.T) {
	r := kestrel.Record{
		Envelope: kestrel.Envelope{Device: "car-17", Boot: 4, Seq: 9, Time: 1560938662000, Priority: kestrel.PriorityNormal},
		Body: &kestrel.RadioStatus{Profile: kestrel.ProfileLTE, Registered: kestrel.RegEmergencyOnly, Online: true,
			RSSI: -93, RSRP: -118, RSRQ: -155, Operator: "46000", AccessTech: 11, TAC: 0x1F00, CellID: 0xFABCDEF12,
			IMEI: "356938035643809", ICCID: "8944200053671052499", OperatorFormat: kestrel.OperatorNumeric,
			ICCIDInvalid: true, RegSource: kestrel.RegSourceC5GREG, RejectedLines: 3},
	}
	b, err := AppendRecord(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v %v", got.Body, err)
	}
	var m map[string]any
	if err := json.Unmarshal(AppendJSON(nil, &r), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"registered": 8.0, "reg_state": "emergency_only", "reg_source": "c5greg",
		"operator_format": "numeric", "access_tech": 11.0, "cell_id": float64(0xFABCDEF12),
		"iccid": "8944200053671052499", "iccid_invalid": true, "rejected_lines": 3.0}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	// Unknown access technology prints null, not GSM's 0.
	r.Body.(*kestrel.RadioStatus).AccessTech = kestrel.AccessTechUnknown
	if !bytes.Contains(AppendJSON(nil, &r), []byte(`"access_tech":null`)) {
		t.Error("unknown AcT not null")
	}
}

// A radio body written before the four appended fields (16 fields, CellID
// as a 32-bit value) still decodes, the new fields zero; and the CellID of
// such a record is encoded byte for byte as before.
func TestRadioStatusOlderTuple(t *testing.T) {
	var b []byte
	b = msgp.AppendArrayHeader(b, 16)
	b = msgp.AppendUint8(b, uint8(kestrel.ProfileLTE))
	b = msgp.AppendUint8(b, uint8(kestrel.RegRoaming))
	b = msgp.AppendBool(b, true)
	b = msgp.AppendInt16(b, -71)
	b = msgp.AppendUint8(b, 99)
	b = msgp.AppendInt16(b, -98)
	b = msgp.AppendInt16(b, -105)
	b = msgp.AppendUint8(b, 0)
	b = msgp.AppendString(b, "")
	b = msgp.AppendString(b, "")
	b = msgp.AppendString(b, "ESN")
	b = msgp.AppendUint8(b, 7)
	b = msgp.AppendUint32(b, 0x1a2b)
	b = msgp.AppendUint32(b, 0x0badcafe)
	b = msgp.AppendString(b, "356938035643809")
	b = msgp.AppendString(b, "8944500102198304826")
	var w wRadioStatus
	rest, err := w.UnmarshalMsg(b)
	if err != nil || len(rest) != 0 {
		t.Fatal(err)
	}
	want := wRadioStatus{Profile: kestrel.ProfileLTE, Registered: kestrel.RegRoaming, Online: true, RSSI: -71, BER: 99,
		RSRP: -98, RSRQ: -105, Operator: "ESN", AccessTech: 7, TAC: 0x1a2b, CellID: 0x0badcafe,
		IMEI: "356938035643809", ICCID: "8944500102198304826"}
	if w != want {
		t.Fatalf("got %+v", w)
	}
	enc, err := w.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same tuple with the header's count changed and the 4 new
	// fields appended (all zero: one byte each).
	b[2] = 20
	b = append(b, 0, 0xc2, 0, 0)
	if !bytes.Equal(enc, b) {
		t.Fatalf("encoding changed:\n%x\n%x", enc, b)
	}
}
