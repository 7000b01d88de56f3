// Package nmea decodes NMEA 0183 from a GPS receiver into fixes, one per
// receiver cycle, the way gpsd does.
//
// Standards and references:
//   - NMEA 0183 version 4.11 (National Marine Electronics Association):
//     sentence framing ($, *hh checksum, CR LF), talker IDs GP, GL, GA, GB,
//     BD, GQ, GI, QZ, GN, and the sentences RMC, GGA, GNS, GLL, GSA, GSV,
//     VTG, ZDA and GST.
//   - gpsd (https://gpsd.io, BSD-2-Clause), drivers/driver_nmea0183.c and
//     gpsd/libgpsd_core.c: the reference behaviour this package follows for
//     cycle-end detection, merging a cycle's sentences into one fix, fix
//     mode, dates (RMC two-digit years, ZDA century) and which sentence
//     carries altitude, speed and track. No gpsd code is copied.
//   - Garmin "Proprietary NMEA 0183 Sentences", 190-00684-00 rev C:
//     $PGRMZ altitude in feet.
//
// The Decoder is a byte-stream state machine with no allocations per
// sentence once warmed up: feed it with Write, pop fixes with Next. The
// Driver wraps a Decoder around an already open port (io.Reader) and emits
// kestrel records; opening ports is the agent's job (agent/serialport).
package nmea
