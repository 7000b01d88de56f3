package powercut

import (
	"bytes"
	"strconv"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/spool"
)

// spoolOpts are used by the workload in the guest and by every check on
// the host. Small segments and a fast group commit put many segment
// switches, recycled files and flushes in a short run; MaxBytes is above
// the free space left on the disk (the ballast takes the rest), so the
// medium fills before the byte bound does.
var spoolOpts = spool.Options{
	SyncInterval: 10 * time.Millisecond,
	SegmentBytes: 64 << 10,
	SeqBlock:     256,
	MaxBytes:     16 << 20,
}

// sealedKey is the spool key of the sealed variant (TestPowerCutSealed,
// KESTREL_POWERCUT_SEALED=1): a test key, never a device's.
var sealedKey = bytes.Repeat([]byte{0x6b}, spool.KeyBytes)

// sealed is set for the sealed variant, in the host and (from the
// environment) in the guest: every record payload AES-256-GCM sealed.
var sealed bool

// options are spoolOpts, with the key and encryption in the sealed variant.
func options() spool.Options {
	o := spoolOpts
	if sealed {
		o.Key, o.Encrypt = sealedKey, true
	}
	return o
}

// laterMaxBytes is the byte bound after the restart that follows the
// first outage: with the ballast gone, later outages run into it.
const laterMaxBytes = 1 << 20

const (
	imageBytes   = 32 << 20 // the ext4 data disk
	ballastBytes = 25 << 20 // a file on it, deleted after the first outage
	spoolDir     = "spool"
)

// payloadLen is the payload size for a record: positions and events are
// tens of bytes, bulk records (sensor batches) a few KiB so that an outage
// fills the disk within seconds.
func payloadLen(seq uint64, p kestrel.Priority) int {
	if p == kestrel.PriorityBulk {
		return 1500 + int(seq%7)*256
	}
	return 30 + int(seq%61)
}

// payload is self-describing, so that a record found on the medium (by the
// checker's frame scan) names its own sequence number and priority.
func payload(seq uint64, p kestrel.Priority) []byte {
	n := payloadLen(seq, p)
	b := make([]byte, 0, n)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ':', '0'+byte(p), ':')
	for len(b) < n {
		b = append(b, byte('a'+(seq+uint64(len(b)))%26))
	}
	return b
}

// parsePayload returns the seq and priority a payload names, if it is
// exactly the payload of that record.
func parsePayload(b []byte) (uint64, kestrel.Priority, bool) {
	i := bytes.IndexByte(b, ':')
	if i <= 0 || i > 20 || len(b) < i+3 || b[i+2] != ':' || b[i+1] < '0' || b[i+1] > '3' {
		return 0, 0, false
	}
	seq, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	p := kestrel.Priority(b[i+1] - '0')
	return seq, p, bytes.Equal(b, payload(seq, p))
}
