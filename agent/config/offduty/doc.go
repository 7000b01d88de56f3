// Package offduty holds the parsers and geometry behind the automatic
// privacy triggers of agent/tracking: the weekly schedule
// (privacy.schedule, in a named time zone) and privacy zones
// (privacy.zones, polygons in WGS 84 latitude and longitude).
//
// Both read outside input (a pushed config), so both are bounded and
// fuzzed: at most MaxEntries schedule entries of MaxEntryLen bytes, at most
// MaxZones zones of MaxVertices vertices each, each zone within MaxExtent
// degrees of latitude and longitude.
//
// It imports nothing internal, so that agent/config can validate with the
// same code that agent/tracking enforces with.
package offduty
