// Package wire is Kestrel's wire format: how records travel from the agent
// to the platform over MQTT, and how the spool stores a single record.
//
// Everything is MessagePack (tinylib/msgp; the generated code for the
// record bodies is bodies_gen.go, made by the go:generate line in
// bodies.go). A telemetry or events payload is one batch; the agent sends
// version 3:
//
//	stream                    (a msgp bin: a batch of positions only)
//	[3, stream, others]       (with records of other kinds)
//
// The stream is range coded: a header (count, boot0, seq0, sec0), then
// the positions in columns (flags, time, lat, lon, alt, speed, track,
// mode, seq, boot, priority, sats, hdop, eph, epv, coarsened), each in the
// cheapest of a few shapes (constant, linear, delta, delta of delta,
// time-scaled delta of delta, raw) with its residuals divided by their
// common divisor and coded in adaptive Rice or Exp-Golomb codes; lat and
// lon may travel in the receiver's NMEA grid, and speed and track as the
// difference from what the positions imply. The other record kinds are
// msgp tuples in others, each with its index in the batch, so decoding
// restores the exact order. The device is not in the payload: the topic
// names it. Versions 1 ([1, device, count, ...]) and 2 ([2, stream,
// others]) still decode. docs/wire.md specifies the layout bit by bit and
// gives the measurements that chose it.
//
// Lossless: every integer field of a record comes back identical, except
// the optional position fields whose Has* flag is clear, which are not
// sent and decode as zero.
//
// The version is the first element of a batch's array (a bare bin is
// version 3) and of a single record; decoders reject another version with
// an error wrapping ErrVersion. No
// input makes a decoder panic (fuzz targets in fuzz_test.go), and a batch
// never allocates for more than MaxRecords records.
package wire
