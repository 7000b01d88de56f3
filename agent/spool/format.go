package spool

// Format is the segment format version this spool writes (it reads the
// older ones too), and FormatSealed the version of sealed segments
// (spool.encrypt). A release manifest names the formats its spool reads
// (transport/fleet.Release.SpoolFormats); the updater refuses a release
// that cannot read the one this device writes.
const (
	Format       = segVersion
	FormatSealed = segVersionSealed
)
