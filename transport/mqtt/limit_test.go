package mqtt

import (
	"bytes"
	"io"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func publishPacket(t testing.TB, topic string, qos byte, id uint16, payload []byte) []byte {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.TopicName, p.Qos, p.MessageID, p.Payload, p.Retain = topic, qos, id, payload, true
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestInboundLimit: an oversize PUBLISH reaches paho's reader as the same
// packet with an empty payload, the packets around it untouched, and the
// payload is never held in memory.
func TestInboundLimit(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(publishPacket(t, "kestrel/v1/met/d1/cmd", 1, 7, []byte("small")))
	stream.Write(publishPacket(t, "kestrel/v1/met/d1/cmd", 1, 8, bytes.Repeat([]byte("x"), 300<<10)))
	ping := packets.NewControlPacket(packets.Pingresp)
	ping.Write(&stream)
	stream.Write(publishPacket(t, "kestrel/v1/met/_all/config/desired", 0, 0, []byte("after")))

	var dropped []string
	l := newInboundLimit(&stream, 64<<10, func(topic string, size int) { dropped = append(dropped, topic) })
	var got []packets.ControlPacket
	for {
		cp, err := packets.ReadPacket(l)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, cp)
	}
	if len(got) != 4 || len(dropped) != 1 || dropped[0] != "kestrel/v1/met/d1/cmd" {
		t.Fatalf("%d packets, dropped %v", len(got), dropped)
	}
	small, big, after := got[0].(*packets.PublishPacket), got[1].(*packets.PublishPacket), got[3].(*packets.PublishPacket)
	if string(small.Payload) != "small" || string(after.Payload) != "after" {
		t.Fatalf("small %q after %q", small.Payload, after.Payload)
	}
	if len(big.Payload) != 0 || big.MessageID != 8 || big.Qos != 1 || !big.Retain || big.TopicName != "kestrel/v1/met/d1/cmd" {
		t.Fatalf("oversize packet became %+v", big)
	}
	if _, ok := got[2].(*packets.PingrespPacket); !ok {
		t.Fatalf("third packet %T", got[2])
	}
}

// FuzzInboundLimit: any byte stream either passes through packet by
// packet or ends in an error; nothing panics, and no packet paho reads
// through the limiter is a PUBLISH over the limit.
func FuzzInboundLimit(f *testing.F) {
	f.Add(publishPacket(f, "a/b", 1, 1, bytes.Repeat([]byte("y"), 200)))
	f.Add(publishPacket(f, "a/b", 0, 0, []byte("z")))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x32, 0x80, 0x01, 0x00, 0x05})
	f.Fuzz(func(t *testing.T, data []byte) {
		l := newInboundLimit(bytes.NewReader(data), 64, nil)
		for range 100 {
			cp, err := packets.ReadPacket(l)
			if err != nil {
				return
			}
			if p, ok := cp.(*packets.PublishPacket); ok && len(p.Payload) > 64 {
				t.Fatalf("payload of %d bytes passed a 64-byte limit", len(p.Payload))
			}
		}
	})
}
