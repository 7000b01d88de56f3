package spool

// Format is the segment format version this spool writes (it reads the
// older ones too). A release manifest names the formats its spool reads
// (transport/fleet.Release.SpoolFormats); the updater refuses a release
// that cannot read this one.
const Format = segVersion
