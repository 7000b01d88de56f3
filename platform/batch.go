package platform

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Channels the platform stores (docs/topics.md).
const (
	ChannelTelemetry      = "telemetry"
	ChannelEvents         = "events"
	ChannelState          = "state"
	ChannelConfigReported = "config/reported"
	ChannelAudit          = "audit"
)

// Channels lists every channel Ingest subscribes to.
var Channels = []string{ChannelTelemetry, ChannelEvents, ChannelState, ChannelConfigReported, ChannelAudit, ChannelUpdateReported}

// MaxPayload bounds one message: larger ones are kept in rejected, not
// decoded (a wire batch is at most 1 MiB, transport/mqtt).
const MaxPayload = 4 << 20

// Message is one MQTT message as the platform received it.
type Message struct {
	Topic    string
	Payload  []byte
	Received time.Time
}

// Row is one decoded record with the fleet its topic named.
type Row struct {
	Fleet    string
	Record   kestrel.Record
	Received time.Time
}

// State is one state (birth or death) message.
type State struct {
	Fleet, Device string
	Online        bool
	Boot          uint32
	Version       string
	Time          int64 // the device's time of the message, ms; orders births and deaths
	JSON          string
	Received      time.Time
	Status        DeviceStatus // the device list's fields of the message
	DeviceKey     string       // the announced device key (base64), checked against the enrolment
}

// Report is a config/reported or audit message, kept as its JSON.
type Report struct {
	Fleet, Device, Channel string
	Payload                string
	Received               time.Time
}

// Rejected is a message that did not decode, kept whole.
type Rejected struct {
	Topic    string
	Payload  []byte
	Err      string
	Received time.Time
}

// Batch is what one transaction writes.
type Batch struct {
	Rows     []Row
	States   []State
	Reports  []Report
	Updates  []Update // update/reported (updates.go)
	Rejected []Rejected
	// Traffic counts the data messages and payload bytes per device.
	Traffic map[[2]string]Traffic
}

// Traffic is data messages and their payload bytes.
type Traffic struct{ Messages, Bytes int64 }

// Len is the number of things the batch holds.
func (b *Batch) Len() int {
	return len(b.Rows) + len(b.States) + len(b.Reports) + len(b.Updates) + len(b.Rejected)
}

// ParseTopic splits kestrel/v1/{fleet}/{device}/{channel}.
func ParseTopic(topic string) (fleet, device, channel string, err error) {
	rest, ok := strings.CutPrefix(topic, "kestrel/v1/")
	if !ok {
		return "", "", "", fmt.Errorf("topic %q: not under kestrel/v1/", topic)
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", fmt.Errorf("topic %q: want kestrel/v1/{fleet}/{device}/{channel}", topic)
	}
	return parts[0], parts[1], parts[2], nil
}

// Add decodes m into the batch. A message that does not decode goes to
// Rejected with the reason, and Add returns that reason; nothing is dropped.
func (b *Batch) Add(m Message) error {
	if err := b.add(m); err != nil {
		p := m.Payload
		if len(p) > MaxPayload {
			p = p[:MaxPayload]
		}
		b.Rejected = append(b.Rejected, Rejected{Topic: cleanText(m.Topic), Payload: append([]byte(nil), p...), Err: err.Error(), Received: m.Received})
		return err
	}
	return nil
}

func (b *Batch) add(m Message) error {
	fleet, device, channel, err := ParseTopic(m.Topic)
	if err != nil {
		return err
	}
	if len(m.Payload) > MaxPayload {
		return fmt.Errorf("%s: payload of %d bytes is over the %d-byte limit", m.Topic, len(m.Payload), MaxPayload)
	}
	switch channel {
	case ChannelTelemetry, ChannelEvents:
		// Version 2 payloads take the device from the topic; a version 1
		// payload naming another device fails.
		recs, err := wire.DecodeBatchFor(device, m.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Topic, err)
		}
		var js []byte
		for i := range recs {
			r := &recs[i]
			if r.Seq > math.MaxInt64 {
				return fmt.Errorf("%s: seq %d does not fit the store's 63 bits", m.Topic, r.Seq)
			}
			if r.Time < minTime || r.Time > maxTime {
				return fmt.Errorf("%s: seq %d: time %d ms is outside years 1-9999", m.Topic, r.Seq, r.Time)
			}
			// Every string must be storable as text: valid UTF-8, no NUL.
			js = wire.AppendJSON(js[:0], r)
			if !storableText(js) {
				return fmt.Errorf("%s: seq %d: a text field is not valid UTF-8 or holds NUL", m.Topic, r.Seq)
			}
		}
		for _, r := range recs {
			b.Rows = append(b.Rows, Row{Fleet: fleet, Record: r, Received: m.Received})
		}
		if b.Traffic == nil {
			b.Traffic = map[[2]string]Traffic{}
		}
		tr := b.Traffic[[2]string{fleet, device}]
		tr.Messages++
		tr.Bytes += int64(len(m.Payload))
		b.Traffic[[2]string{fleet, device}] = tr
	case ChannelState:
		st, err := mqtt.DecodeState(m.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Topic, err)
		}
		s := State{Fleet: fleet, Device: device, Received: m.Received}
		s.Online, _ = st["online"].(bool)
		s.Boot = uint32(asInt(st["boot"]))
		s.Version, _ = st["version"].(string)
		s.DeviceKey, _ = st["device_key"].(string)
		s.Time = asInt(st["time"])
		s.Status = statusOf(st)
		js, err := json.Marshal(jsonSafe(st))
		if err != nil {
			return fmt.Errorf("%s: state to JSON: %w", m.Topic, err)
		}
		if !storableText(js) {
			return fmt.Errorf("%s: state holds text that is not valid UTF-8 or holds NUL", m.Topic)
		}
		s.JSON = string(js)
		b.States = append(b.States, s)
	case ChannelConfigReported, ChannelAudit:
		if !json.Valid(m.Payload) || !storableText(m.Payload) {
			return fmt.Errorf("%s: payload is not JSON in valid UTF-8 without NUL", m.Topic)
		}
		b.Reports = append(b.Reports, Report{Fleet: fleet, Device: device, Channel: channel, Payload: string(m.Payload), Received: m.Received})
	case ChannelUpdateReported:
		u, err := decodeUpdate(fleet, device, m)
		if err != nil {
			return err
		}
		b.Updates = append(b.Updates, u)
	default:
		return fmt.Errorf("%s: channel %q is not one the platform stores", m.Topic, channel)
	}
	return nil
}

// The times both stores hold: years 1 to 9999 (SQLite's text is four digits).
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli()
)

// storableText: PostgreSQL text and jsonb refuse NUL (also as the JSON
// escape \u0000) and invalid UTF-8.
func storableText(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 && !bytes.Contains(b, []byte(`\u0000`))
}

// cleanText makes s storable, for the rejected table's topic.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case uint64:
		if x > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(x)
	case int:
		return int64(x)
	case uint32:
		return int64(x)
	case int32:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}

// jsonSafe turns what msgp.ReadIntfBytes returns into values encoding/json
// accepts (binary as hex, maps with string keys).
func jsonSafe(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonSafe(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonSafe(e)
		}
		return out
	case []byte:
		return hex.EncodeToString(x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	}
	return v
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:16])
}
