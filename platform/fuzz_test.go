package platform

import (
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/transport/wire"
)

// FuzzBatchAdd feeds any topic and payload to the decoder of incoming
// messages: it must never panic, must either decode or keep the message in
// Rejected (nothing is dropped), and must keep every record within the
// store's ranges. The seeds run as a normal test.
func FuzzBatchAdd(f *testing.F) {
	good := message(f, "met", "bwc-1", ChannelTelemetry, seqRecs("bwc-1", 1, 1, 2, 3)...)
	f.Add(good.Topic, good.Payload)
	f.Add(wire.Topic("met", "bwc-1", ChannelState), appendState(nil, true, 3, "1.0", 1000))
	f.Add(wire.Topic("met", "bwc-1", ChannelAudit), []byte(`{"result":"applied"}`))
	f.Add(wire.Topic("met", "bwc-1", ChannelConfigReported), []byte(`{"version":`))
	f.Add(wire.Topic("met", "bwc-1", ChannelUpdateReported), []byte(`{"device":"bwc-1","fleet":"met","seq":2,"version":"2.0","state":"good","running_seq":2,"time":1000}`))
	f.Add(wire.Topic("met", "bwc-1", ChannelUpdateReported), []byte(`{"kestrel":"kestrel-device/1","kid":"x","body":{"device":"bwc-1"},"sig":""}`))
	f.Add("kestrel/v1/met/bwc-1/telemetry", []byte{0x98, 0x01})
	f.Add("kestrel/v1/met", []byte{})
	f.Add("other/topic", good.Payload)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		var b Batch
		before := b.Len()
		err := b.Add(Message{Topic: topic, Payload: payload, Received: time.Unix(0, 0)})
		if err != nil {
			if len(b.Rejected) != 1 || b.Len() != before+1 {
				t.Fatalf("rejected message not kept: %+v", b)
			}
			return
		}
		for _, u := range b.Updates {
			if u.Seq > 1<<63-1 || u.Have < 0 || !storableText([]byte(u.Payload)) {
				t.Fatalf("update report out of the store's ranges accepted: %+v", u)
			}
		}
		for _, r := range b.Rows {
			if r.Record.Seq > 1<<63-1 {
				t.Fatalf("seq %d accepted", r.Record.Seq)
			}
		}
	})
}
