package agent

import (
	"log/slog"
	"sync"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// outbox adapts the spool, which stores encoded records, to the MQTT
// session, which batches records: it decodes what the spool hands out.
type outbox struct {
	sp  *spool.Spool
	log *slog.Logger

	mu    sync.Mutex
	items []spool.Item
	bad   []uint64
}

var (
	_ mqtt.Outbox      = (*outbox)(nil)
	_ mqtt.Notifier    = (*outbox)(nil)
	_ mqtt.UrgentTaker = (*outbox)(nil)
)

// maxTakeBytes bounds one Take so a batch stays well under the broker's
// packet limit even before the wire encoding compresses it.
const maxTakeBytes = 512 << 10

func (o *outbox) Take(dst []kestrel.Record, max int) ([]kestrel.Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.items = o.sp.Take(o.items[:0], max, maxTakeBytes)
	return o.decode(dst), nil
}

// TakeUrgent takes only emergency and high records, so that an emergency
// goes out even while the in-flight window is full of backlog.
func (o *outbox) TakeUrgent(dst []kestrel.Record, max int) ([]kestrel.Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.items = o.sp.TakeUrgent(o.items[:0], max, maxTakeBytes)
	return o.decode(dst), nil
}

// decode turns spool items into records. A payload that does not decode
// cannot be sent usefully and would block the lane for ever: it is
// committed (dropped) and logged, never retried.
func (o *outbox) decode(dst []kestrel.Record) []kestrel.Record {
	o.bad = o.bad[:0]
	for i := range o.items {
		rec, err := wire.DecodeRecord(o.items[i].Data)
		if err != nil {
			o.log.Error("spooled record does not decode; dropping it", "seq", o.items[i].Seq, "err", err)
			o.bad = append(o.bad, o.items[i].Seq)
			continue
		}
		dst = append(dst, rec)
	}
	if len(o.bad) > 0 {
		if err := o.sp.Commit(o.bad); err != nil {
			o.log.Error("drop undecodable records", "err", err)
		}
	}
	return dst
}

func (o *outbox) Commit(seqs []uint64) error { return o.sp.Commit(seqs) }
func (o *outbox) Release(seqs []uint64)      { o.sp.Release(seqs) }
func (o *outbox) Ready() <-chan struct{}     { return o.sp.Ready() }
