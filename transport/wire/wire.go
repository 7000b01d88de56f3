package wire

import (
	"errors"
	"strings"
)

// Version is the batch format version that AppendBatch writes: the first
// element of a batch's array, or a bare msgpack bin (a version 3 batch of
// positions only). Decoders also read versions 1 and 2.
const Version = 3

// version2 is the batch format before version 3's two savings
// (AppendBatchV2).
const version2 = 2

// version1 is the first batch format, which carried the device in the
// payload (AppendBatchV1).
const version1 = 1

// recordVersion is the version of the single-record form (AppendRecord,
// the spool's), which version 2 of the batch did not change.
const recordVersion = 1

// ErrVersion is returned (wrapped, with the version found) for a payload
// of a version this decoder does not know.
var ErrVersion = errors.New("unknown wire format version")

// ErrFormat is returned (wrapped, with detail) for a payload that is not a
// well-formed Kestrel wire message.
var ErrFormat = errors.New("malformed wire payload")

// MaxRecords is the most records one batch may hold. Decoders reject larger
// counts before allocating, so a hostile length cannot exhaust memory.
const MaxRecords = 10000

// Topic returns the MQTT topic of a channel: "kestrel/v1/{fleet}/{device}/{channel}".
func Topic(fleet, device, channel string) string {
	var b strings.Builder
	b.Grow(len("kestrel/v1///") + len(fleet) + len(device) + len(channel))
	b.WriteString("kestrel/v1/")
	b.WriteString(fleet)
	b.WriteByte('/')
	b.WriteString(device)
	b.WriteByte('/')
	b.WriteString(channel)
	return b.String()
}
