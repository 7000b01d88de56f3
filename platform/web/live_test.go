package web

import (
	"strings"
	"testing"
)

// An emergency list published behind a backlog of device frames is the
// next frame a stream writes, a newer list replaces one not yet written,
// and a full device queue drops device frames (asking for a resync), never
// the emergency list.
func TestEmergencyFrameGoesFirst(t *testing.T) {
	h := hub{clients: map[*client]struct{}{}}
	c := h.subscribe()
	for range 100 { // more than the queue holds
		h.publish("devices", []byte(`[{"device":"sim"}]`))
	}
	h.publishUrgent("emergencies", []byte(`[{"device":"old"}]`))
	h.publishUrgent("emergencies", []byte(`[{"device":"car-7"}]`))
	done := make(chan struct{})
	if f := string(c.next(done, nil)); !strings.HasPrefix(f, "event: emergencies\n") || !strings.Contains(f, "car-7") {
		t.Fatalf("first frame %q, want the newest emergency list", f)
	}
	var devices, resync int
	for len(c.frames) > 0 {
		f := string(c.next(done, nil))
		switch {
		case strings.HasPrefix(f, "event: devices\n"):
			devices++
		case strings.HasPrefix(f, "event: resync\n"):
			resync++
		default:
			t.Fatalf("frame %q after the emergency list", f)
		}
	}
	if devices+resync != cap(c.frames) || resync != 0 && devices == 0 {
		t.Fatalf("%d device frames and %d resyncs", devices, resync)
	}
	close(done)
	if f := c.next(done, nil); f != nil {
		t.Fatalf("after done: %q", f)
	}
}
