package mqtt

import "time"

// StateIntervals is each link profile's longest wait between two
// republications of the retained state message while nothing meaningful
// in it changes (the agent republishes at once on a meaningful change).
// It is a profile knob beside the batch ages and keepalive, kept in its own
// table so that Profile's shape stays as it is.
//
// At 1 Hz a ~700-byte state message every minute costs about 12 B per fix
// on the link, more than the narrowband budget of 10 B/fix on its own;
// every 15 minutes it costs about 0.8 B/fix (docs/benchmarks.md, "Link
// budget of the whole agent").
var StateIntervals = map[string]time.Duration{
	ProfileLTE.Name:        time.Minute,
	ProfileNarrowband.Name: 15 * time.Minute,
}

// StateInterval is the profile's state interval ("" is lte); an unknown
// profile gets lte's.
func StateInterval(profile string) time.Duration {
	if d, ok := StateIntervals[profile]; ok {
		return d
	}
	return StateIntervals[ProfileLTE.Name]
}
