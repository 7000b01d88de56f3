package fleet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
)

// testDevice is a device key (agent/identity's shape).
type testDevice struct{ priv ed25519.PrivateKey }

func (d testDevice) ID() string             { return KeyID(d.priv.Public().(ed25519.PublicKey)) }
func (d testDevice) Sign(msg []byte) []byte { return ed25519.Sign(d.priv, msg) }
func (d testDevice) announced() string      { return EncodePublicKey(d.priv.Public().(ed25519.PublicKey)) }

func TestDeviceSignature(t *testing.T) {
	k1, _ := testKey(7)
	k2, _ := testKey(8)
	dev, other := testDevice{k1}, testDevice{k2}
	r := Report{Device: "bwc-1", Fleet: "met", Version: 3, Status: StatusApplied, Running: 3, Effective: []EffectiveKey{{Path: "gps.baud", Value: "9600", Scope: "device/bwc-1", Version: 3}}}
	body, _ := json.Marshal(&r)
	p, err := Seal(dev, "met", "bwc-1", ChannelReported, body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReport(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 3 || got.Effective[0].Value != "9600" || got.Signature == nil || got.Signature.KeyID != dev.ID() {
		t.Fatalf("decoded %+v", got)
	}
	if v, err := Verdict(got.Signature, dev.announced(), "met", "bwc-1", ChannelReported); v != VerdictVerified || err != nil {
		t.Fatalf("verdict %q, %v", v, err)
	}
	// Bound to the fleet, device and channel: a report replayed as another
	// device's, or as a reply, does not verify.
	for _, tc := range []struct{ fleet, device, channel string }{
		{"other", "bwc-1", ChannelReported}, {"met", "bwc-2", ChannelReported}, {"met", "bwc-1", "reply"},
	} {
		if v, err := Verdict(got.Signature, dev.announced(), tc.fleet, tc.device, tc.channel); v != VerdictBad || !errors.Is(err, ErrBadSignature) {
			t.Errorf("%+v: verdict %q, %v", tc, v, err)
		}
	}
	// A changed body does not verify.
	tampered := bytes.Replace(p, []byte(`"9600"`), []byte(`"4800"`), 1)
	tr, err := DecodeReport(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Verdict(tr.Signature, dev.announced(), "met", "bwc-1", ChannelReported); v != VerdictBad {
		t.Fatalf("tampered body: %q", v)
	}
	// Another key than the announced one: flagged as a key change.
	if v, err := Verdict(got.Signature, other.announced(), "met", "bwc-1", ChannelReported); v != VerdictKeyChanged || !errors.Is(err, ErrDeviceKeyChanged) {
		t.Fatalf("other announced key: %q, %v", v, err)
	}
	if v, _ := Verdict(got.Signature, "", "met", "bwc-1", ChannelReported); v != VerdictNoKey {
		t.Fatalf("no announced key: %q", v)
	}
	// Unsigned (a device from before signing) still decodes, and says so.
	plain, err := DecodeReport(body)
	if err != nil || plain.Signature != nil {
		t.Fatalf("unsigned: %v %v", plain, err)
	}
	if v, _ := Verdict(plain.Signature, "", "met", "bwc-1", ChannelReported); v != VerdictUnsigned {
		t.Fatalf("unsigned verdict %q", v)
	}
	// ...but not from a device that announces a key: stripped or forged.
	if v, err := Verdict(plain.Signature, dev.announced(), "met", "bwc-1", ChannelReported); v != VerdictMissing || err == nil {
		t.Fatalf("unsigned from a device with a key: %q %v", v, err)
	}
	// Replies the same way.
	rb, _ := json.Marshal(&Reply{ID: "r1", Device: "bwc-1", Status: ReplyOK, Result: json.RawMessage(`{"a":1}`)})
	rp, _ := Seal(dev, "met", "bwc-1", "reply/ctl-1", rb)
	rep, err := DecodeReply(rp)
	if err != nil || rep.ID != "r1" {
		t.Fatalf("reply: %+v %v", rep, err)
	}
	if v, err := Verdict(rep.Signature, dev.announced(), "met", "bwc-1", "reply/ctl-1"); v != VerdictVerified {
		t.Fatalf("reply verdict %q %v", v, err)
	}
	for _, bad := range [][]byte{
		[]byte(`{"kestrel":"kestrel-device/9","kid":"x","body":{},"sig":""}`),
		[]byte(`{"kestrel":"kestrel-device/1","kid":"x","body":{"status":"applied"}}`),
		[]byte(`{"kestrel":"kestrel-device/1","kid":"x","body":{},"sig":"AAAA","extra":1}`),
		bytes.Repeat([]byte(" "), MaxDeviceMessage+1),
	} {
		if _, _, err := Open(bad); err == nil {
			t.Errorf("Open(%.60q) accepted", bad)
		}
	}
}

func FuzzOpenDeviceMessage(f *testing.F) {
	k, _ := testKey(7)
	dev := testDevice{k}
	good, _ := Seal(dev, "met", "bwc-1", ChannelReported, []byte(`{"device":"bwc-1","status":"applied","time":1}`))
	f.Add(good)
	f.Add([]byte(`{"device":"bwc-1","status":"applied"}`))
	f.Add([]byte(`{"kestrel":"kestrel-device/1","kid":"","body":null,"sig":null}`))
	f.Add([]byte(`{"kestrel":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		body, sig, err := Open(data)
		if err != nil {
			return
		}
		if sig == nil && !bytes.Equal(body, data) {
			t.Fatal("unsigned body differs from the payload")
		}
		_, _ = Verdict(sig, dev.announced(), "met", "bwc-1", ChannelReported)
		_, _ = DecodeReport(data)
		_, _ = DecodeReply(data)
	})
}
