package platform

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

type deviceKey struct{ priv ed25519.PrivateKey }

func (k deviceKey) ID() string             { return fleet.KeyID(k.priv.Public().(ed25519.PublicKey)) }
func (k deviceKey) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

func updateMsg(t *testing.T, k deviceKey, dev string, r fleet.UpdateReport) Message {
	t.Helper()
	r.Device, r.Fleet = dev, "met"
	body, _ := json.Marshal(r)
	p, err := fleet.Seal(k, "met", dev, fleet.ChannelUpdateReported, body)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Topic: wire.Topic("met", dev, ChannelUpdateReported), Payload: p, Received: time.Now()}
}

// TestUpdates: update reports keep their history once each (a retained
// report redelivered is not a second row); the latest per device is by the
// device's time then arrival; a report naming another device is rejected,
// not stored; on SQLite and PostgreSQL.
func TestUpdates(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		k := deviceKey{priv}
		ctx := context.Background()
		t0 := time.Now().UnixMilli()
		steps := []fleet.UpdateReport{
			{Seq: 2, Version: "2.0", State: fleet.UpdateDownloading, Have: 0, Size: 9000, Delta: true, Running: 1, Time: t0},
			{Seq: 2, Version: "2.0", State: fleet.UpdateDownloading, Have: 4500, Size: 9000, Delta: true, Running: 1, Time: t0},
			{Seq: 2, Version: "2.0", State: fleet.UpdatePendingVerify, Running: 1, Time: t0 + 5},
			{Seq: 2, Version: "2.0", State: fleet.UpdateReverted, Reason: "health gate: gps silent", Running: 1, Time: t0 + 9},
		}
		var msgs []Message
		for _, r := range steps {
			msgs = append(msgs, updateMsg(t, k, "bwc-1", r))
		}
		msgs = append(msgs, updateMsg(t, k, "bwc-2", fleet.UpdateReport{Seq: 2, Version: "2.0", State: fleet.UpdateGood, Running: 2, Time: t0}))
		write(t, s, msgs...)
		write(t, s, msgs[3], msgs[4]) // the retained reports again, after a reconnect
		// A report whose body names another device than its topic.
		bad := updateMsg(t, k, "bwc-3", fleet.UpdateReport{Seq: 2, State: fleet.UpdateGood, Time: t0})
		bad.Topic = wire.Topic("met", "bwc-4", ChannelUpdateReported)
		if res := write(t, s, bad); res.Rejected != 1 {
			t.Fatalf("a report for another device was not rejected: %+v", res)
		}
		latest, err := s.Updates(ctx, UpdateQuery{Fleet: "met"})
		if err != nil {
			t.Fatal(err)
		}
		if len(latest) != 2 || latest[0].Device != "bwc-1" || latest[0].State != fleet.UpdateReverted ||
			latest[0].Reason != "health gate: gps silent" || latest[1].State != fleet.UpdateGood || latest[1].RunningSeq != 2 {
			t.Fatalf("latest %+v", latest)
		}
		if latest[0].KeyID != k.ID() {
			t.Errorf("kid %q, want %q", latest[0].KeyID, k.ID())
		}
		hist, err := s.Updates(ctx, UpdateQuery{Fleet: "met", Device: "bwc-1", History: true})
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, h := range hist {
			states = append(states, h.State)
		}
		if got := strings.Join(states, ","); got != "downloading,downloading,pending_verify,reverted" {
			t.Fatalf("history %s (redelivery must not add rows; order is the device's)", got)
		}
		if hist[1].Have != 4500 || !hist[1].Delta || hist[1].Size != 9000 {
			t.Errorf("progress row %+v", hist[1])
		}
		// The stored payload still carries the device's seal.
		r, err := fleet.DecodeUpdateReport([]byte(hist[3].Payload))
		if err != nil || r.Signature == nil {
			t.Fatalf("stored payload lost its seal: %v", err)
		}
		pub := fleet.EncodePublicKey(priv.Public().(ed25519.PublicKey))
		if err := r.Signature.Verify(pub, "met", "bwc-1", fleet.ChannelUpdateReported); err != nil {
			t.Errorf("stored payload does not verify: %v", err)
		}
	})
}

// TestUpdateReportChecks: what decodeUpdate refuses.
func TestUpdateReportChecks(t *testing.T) {
	topic := wire.Topic("met", "bwc-1", ChannelUpdateReported)
	for name, p := range map[string]string{
		"not json":      `{"device":`,
		"other fleet":   `{"device":"bwc-1","fleet":"gmp","seq":1,"state":"good","time":1000}`,
		"bad state":     `{"device":"bwc-1","fleet":"met","seq":1,"state":"GOOD; DROP","time":1000}`,
		"huge seq":      `{"device":"bwc-1","fleet":"met","seq":18446744073709551615,"state":"good","time":1000}`,
		"negative":      `{"device":"bwc-1","fleet":"met","seq":1,"state":"downloading","have":-1,"time":1000}`,
		"time":          `{"device":"bwc-1","fleet":"met","seq":1,"state":"good","time":-99999999999999999}`,
		"nul":           `{"device":"bwc-1","fleet":"met","seq":1,"state":"good","reason":"a\u0000b","time":1000}`,
		"forged format": `{"kestrel":"kestrel-device/9","body":{}}`,
	} {
		var b Batch
		if err := b.Add(Message{Topic: topic, Payload: []byte(p), Received: time.Now()}); err == nil || len(b.Rejected) != 1 {
			t.Errorf("%s: accepted", name)
		}
	}
}
