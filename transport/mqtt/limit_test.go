package mqtt

import (
	"bytes"
	"errors"
	"io"
	"runtime"
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
	f.Add([]byte{0x90, 0xff, 0xff, 0xff, 0x7f}) // a 256 MiB SUBACK
	f.Add([]byte{0x90, 0x03, 0x00, 0x01, 0x01, 0x20, 0x02, 0x00, 0x00, 0xd0, 0x00})
	f.Add([]byte{0x40, 0x02, 0x00, 0x07, 0xb0, 0x02, 0x00, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		l := newInboundLimit(bytes.NewReader(data), 64, nil)
		for range 100 {
			cp, err := packets.ReadPacket(l)
			if err != nil {
				return
			}
			switch p := cp.(type) {
			case *packets.PublishPacket:
				if len(p.Payload) > 64 {
					t.Fatalf("payload of %d bytes passed a 64-byte limit", len(p.Payload))
				}
			case *packets.SubackPacket:
				if len(p.ReturnCodes) > subscribeFilters {
					t.Fatalf("SUBACK with %d return codes passed", len(p.ReturnCodes))
				}
			case *packets.ConnackPacket, *packets.PubackPacket, *packets.PubrecPacket, *packets.PubrelPacket,
				*packets.PubcompPacket, *packets.UnsubackPacket, *packets.PingrespPacket:
			default:
				t.Fatalf("%T, which a server never sends, passed", cp)
			}
		}
	})
}

// zeros is an endless stream of zero bytes: a broker that keeps sending.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestInboundLimitNonPublish: a packet other than PUBLISH is held to the
// length MQTT 3.1.1 gives it, and one a server never sends is refused,
// both with ErrMalformedPacket and before paho allocates the announced
// length (a SUBACK header 0x90 ff ff ff 7f announced 256 MiB).
func TestInboundLimitNonPublish(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  []byte
	}{
		{"256 MiB SUBACK", []byte{0x90, 0xff, 0xff, 0xff, 0x7f}},
		{"SUBACK with 2 return codes", []byte{0x90, 0x04}},
		{"empty SUBACK", []byte{0x90, 0x02}},
		{"64 KiB PUBACK", []byte{0x40, 0x80, 0x80, 0x04}},
		{"3-byte CONNACK", []byte{0x20, 0x03}},
		{"UNSUBACK of 1 MiB", []byte{0xb0, 0x80, 0x80, 0x40}},
		{"PINGRESP with a body", []byte{0xd0, 0x01}},
		{"CONNECT from the server", []byte{0x10, 0x0c}},
		{"SUBSCRIBE from the server", []byte{0x82, 0x08}},
		{"PINGREQ from the server", []byte{0xc0, 0x00}},
		{"DISCONNECT from the server", []byte{0xe0, 0x00}},
		{"reserved type 15", []byte{0xf0, 0x00}},
		{"reserved type 0", []byte{0x00, 0x00}},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l := newInboundLimit(io.MultiReader(bytes.NewReader(tc.hdr), zeros{}), 64<<10, nil)
		_, err := packets.ReadPacket(l)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMalformedPacket) {
			t.Errorf("%s: %v, want ErrMalformedPacket", tc.name, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s: %d bytes allocated reading it", tc.name, n)
		}
	}
	// What a broker does send passes.
	var good bytes.Buffer
	good.Write([]byte{0x20, 0x02, 0x00, 0x00})       // CONNACK accepted
	good.Write([]byte{0x90, 0x03, 0x00, 0x01, 0x01}) // SUBACK granted QoS 1
	good.Write([]byte{0x40, 0x02, 0x00, 0x02})       // PUBACK
	good.Write([]byte{0xb0, 0x02, 0x00, 0x03})       // UNSUBACK
	good.Write([]byte{0xd0, 0x00})                   // PINGRESP
	l := newInboundLimit(&good, 64<<10, nil)
	for i := range 5 {
		if _, err := packets.ReadPacket(l); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
	}
}
