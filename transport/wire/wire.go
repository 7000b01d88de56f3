package wire

import (
	"errors"
	"strings"
)

// Version is the wire format version that this package writes. It is the
// first element of every batch and every single record.
const Version = 1

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
