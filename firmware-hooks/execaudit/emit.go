package execaudit

import (
	"bytes"
	"fmt"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// execEvent is one exec as the kernel reported it.
type execEvent struct {
	PID, PPID, UID   uint32
	Comm, ParentComm string
	Path             string
	Truncated        bool
}

// records turns one exec into its records: the audit record, and a security
// event when the path is not allowed.
func records(allow AllowList, ev execEvent, now time.Time) []kestrel.Record {
	ok := !ev.Truncated && allow.Allowed(ev.Path)
	ms := now.UnixMilli()
	audit := &kestrel.ExecAudit{Path: ev.Path, PID: ev.PID, PPID: ev.PPID, UID: ev.UID,
		ParentComm: ev.ParentComm, Allowed: ok}
	if ok {
		return []kestrel.Record{{Envelope: kestrel.Envelope{Time: ms, Priority: kestrel.PriorityBulk}, Body: audit}}
	}
	trunc := ""
	if ev.Truncated {
		trunc = " (path truncated)"
	}
	return []kestrel.Record{
		{Envelope: kestrel.Envelope{Time: ms, Priority: kestrel.PriorityNormal}, Body: audit},
		{Envelope: kestrel.Envelope{Time: ms, Priority: kestrel.PriorityHigh}, Body: &kestrel.Event{
			Type: kestrel.EventSecurity, Source: "ebpf", Name: "exec", Value: int64(ev.PID),
			Text: fmt.Sprintf("exec not on allow-list: %s%s (pid %d, uid %d, parent %d %s)",
				ev.Path, trunc, ev.PID, ev.UID, ev.PPID, ev.ParentComm),
		}},
	}
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
