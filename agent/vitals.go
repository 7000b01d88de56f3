package agent

import (
	"sync"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

// vitals keeps when each part last showed that it works, for the fleet
// controller's health check after a change (LastSign).
type vitals struct {
	mu    sync.Mutex
	gps   time.Time // a valid NMEA sentence: a fix, or a status with data
	radio time.Time // the radio answered an AT query
}

// observe notes the signs of life a record carries, at now.
func (v *vitals) observe(rec *kestrel.Record, now time.Time) {
	var part *time.Time
	switch b := rec.Body.(type) {
	case *kestrel.Position:
		part = &v.gps
	case *kestrel.GPSStatus:
		if b.State != kestrel.GPSNoData {
			part = &v.gps
		}
	case *kestrel.RadioStatus:
		if b.Online {
			part = &v.radio
		}
	}
	if part != nil {
		v.mu.Lock()
		*part = now
		v.mu.Unlock()
	}
}

// LastSign is when a part ("gps", "radio") last showed that it works: the
// GPS receiver sent valid NMEA sentences (a fix, or a status with data),
// the radio answered an AT query. Zero: not since the agent started (or
// an unknown part).
func (a *Agent) LastSign(part string) time.Time {
	a.vitals.mu.Lock()
	defer a.vitals.mu.Unlock()
	switch part {
	case "gps":
		return a.vitals.gps
	case "radio":
		return a.vitals.radio
	}
	return time.Time{}
}
