package mqtt

import (
	"fmt"
	"time"
)

// A Profile is a link's latency budget and ping economy: how long records
// of each priority may wait to share a message, and the keepalive. The
// budgets are from the time the session takes a record from the Outbox
// to the PUBLISH; the link's own delay comes on top.
//
//   - emergency: at once, always (not configurable);
//   - high: HighAge (0: at once; at most 1 s);
//   - normal: NormalAge, the profile's bound less the link's delay
//     (control rooms' vehicle location refreshes every 5-30 s);
//   - bulk: BulkAge (minutes).
//
// A backlog never waits on these: a batch cut from a full Take goes out as
// soon as the in-flight window allows (drain.go).
type Profile struct {
	Name      string
	HighAge   time.Duration
	NormalAge time.Duration
	BulkAge   time.Duration
	// KeepAlive and PingTimeout: with live traffic every few seconds paho
	// never pings (a PINGREQ goes only after KeepAlive without traffic),
	// so the keepalive only costs bytes on an idle link: narrowband pays
	// 4 bytes per PINGREQ/PINGRESP pair, so it pings rarely.
	KeepAlive   time.Duration
	PingTimeout time.Duration
}

// The link profiles. lte is the default: normal positions at the broker
// within 5 s. narrowband (TETRA packet data, satellite, LPWA) keeps normal
// positions within 10 s and emergencies within 1 s, for about half the
// bytes per fix (docs/benchmarks.md, "Link budget").
var (
	ProfileLTE = Profile{Name: "lte", HighAge: 0, NormalAge: 4500 * time.Millisecond, BulkAge: time.Minute,
		KeepAlive: 60 * time.Second, PingTimeout: 20 * time.Second}
	ProfileNarrowband = Profile{Name: "narrowband", HighAge: 0, NormalAge: 9500 * time.Millisecond, BulkAge: 5 * time.Minute,
		KeepAlive: 5 * time.Minute, PingTimeout: 60 * time.Second}
)

// Profiles lists the profiles by name.
var Profiles = map[string]Profile{ProfileLTE.Name: ProfileLTE, ProfileNarrowband.Name: ProfileNarrowband}

// maxHighAge is the bound on high-priority records' wait.
const maxHighAge = time.Second

// LookupProfile returns the profile called name ("" is lte).
func LookupProfile(name string) (Profile, error) {
	if name == "" {
		return ProfileLTE, nil
	}
	p, ok := Profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown link profile %q (lte or narrowband)", name)
	}
	return p, nil
}
