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
//
// Use, in the agent:
//
//	sp, err := spool.Open(cfg.Spool.Dir, spool.Options{}, log) // Health says if it runs in memory only
//	seq := sp.NextSeq()                                         // stamp the record with sp.Boot() and seq
//	tk, err := sp.Append(spool.Item{Seq: seq, Priority: p, Time: ms, Data: encoded})
//
// and in the transport's sending goroutine:
//
//	<-sp.Ready()                          // or a timer
//	items = sp.Take(items, 64, 16<<10)    // one MQTT message's worth
//	// publish; on PUBACK:     sp.Commit(seqs)
//	// on connection loss:     sp.Release(seqs)
//
// Ticket.Durable is for callers that must know a record is crash-safe
// (the emergency path); most never wait on it.
package spool
