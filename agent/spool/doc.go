// Package spool is the agent's durable, bounded, prioritised store of records
// waiting for the broker's acknowledgement.
//
// Records are opaque payloads (the agent encodes them with transport/wire
// first). The spool keeps an index in memory and the payloads in a
// segmented, append-only log of CRC32C-framed records (see docs/spool.md for
// the format, the guarantees and the measurements behind the choice).
//
// Life of a record:
//
//	Append ─► pending (memory) ─► group commit every SyncInterval ─► log (fsynced)
//	   │                                     ▲ skipped if already acknowledged
//	   └─ Take (in flight) ─► Commit (gone) or Release (queued again)
//
// Sending order (DESIGN.md, "Delivery"): emergency oldest-first, high
// oldest-first, live normal newest-first, live bulk newest-first, backlog
// normal oldest-first, backlog bulk oldest-first. A record is live while it
// is younger than Options.LiveWindow since it was appended in this run;
// records recovered after a restart are backlog.
package spool
