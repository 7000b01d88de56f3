package wire

import (
	"fmt"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/tinylib/msgp/msgp"
)

// A single record is one msgp array, readable by any msgpack decoder:
//
//	[version, kind, device, boot, seq, time, priority, body]
//
// body is the kind's tuple (positions too, as a wPosition tuple). The spool
// stores records in this form; it costs about 30 bytes for a position.
const recordFields = 8

// AppendRecord appends the single-record encoding of r to dst. It
// allocates nothing when dst has capacity.
func AppendRecord(dst []byte, r *kestrel.Record) ([]byte, error) {
	k, err := bodyKind(r.Body)
	if err != nil {
		return dst, fmt.Errorf("encode record: %w", err)
	}
	dst = msgp.AppendArrayHeader(dst, recordFields)
	dst = msgp.AppendUint(dst, recordVersion)
	dst = msgp.AppendUint8(dst, uint8(k))
	dst = msgp.AppendString(dst, r.Device)
	dst = msgp.AppendUint32(dst, r.Boot)
	dst = msgp.AppendUint64(dst, r.Seq)
	dst = msgp.AppendInt64(dst, r.Time)
	dst = msgp.AppendUint8(dst, uint8(r.Priority))
	if dst, err = appendBody(dst, r.Body); err != nil {
		return dst, fmt.Errorf("encode record: %w", err)
	}
	return dst, nil
}

// DecodeRecord decodes what AppendRecord wrote. It never panics; a record
// of another version fails with an error wrapping ErrVersion.
func DecodeRecord(b []byte) (kestrel.Record, error) {
	var r kestrel.Record
	n, _, b, err := readVersion(b, "record", recordVersion)
	if err != nil {
		return r, err
	}
	if n < recordFields {
		return r, fmt.Errorf("%w: record has %d fields, want %d", ErrFormat, n, recordFields)
	}
	fail := func(what string, e error) (kestrel.Record, error) {
		return kestrel.Record{}, fmt.Errorf("%w: record %s: %w", ErrFormat, what, e)
	}
	k, b, err := msgp.ReadUint8Bytes(b)
	if err != nil {
		return fail("kind", err)
	}
	if r.Device, b, err = msgp.ReadStringBytes(b); err != nil {
		return fail("device", err)
	}
	if r.Boot, b, err = msgp.ReadUint32Bytes(b); err != nil {
		return fail("boot", err)
	}
	if r.Seq, b, err = msgp.ReadUint64Bytes(b); err != nil {
		return fail("seq", err)
	}
	if r.Time, b, err = msgp.ReadInt64Bytes(b); err != nil {
		return fail("time", err)
	}
	p, b, err := msgp.ReadUint8Bytes(b)
	if err != nil {
		return fail("priority", err)
	}
	r.Priority = kestrel.Priority(p)
	if r.Body, b, err = decodeBody(b, kestrel.Kind(k)); err != nil {
		return fail("body", err)
	}
	for i := uint32(recordFields); i < n; i++ {
		if b, err = msgp.Skip(b); err != nil {
			return fail("trailing field", err)
		}
	}
	if len(b) != 0 {
		return fail("end", fmt.Errorf("%d trailing bytes", len(b)))
	}
	return r, nil
}
