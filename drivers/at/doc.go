// Package at is an AT command engine for radios and modems on an open
// serial port.
//
// Standards: ITU-T V.250 (command line syntax, echo, final result codes),
// 3GPP TS 27.007 (+CME ERROR, information response format, unsolicited
// result codes) and 3GPP TS 27.005 (+CMS ERROR). TETRA PEI (ETSI
// EN 300 392-5) uses the same framing.
//
// The engine serialises commands through a queue, gives each its own
// timeout, and sorts every line it reads into echo, information response,
// final result code or unsolicited result code (URC). URCs may arrive at any
// moment, between the lines of a response included; a URC prefix is told
// apart from the response of the command in flight by the command's own
// prefix (AT+CREG? expects +CREG lines), the approach of oFono and ModemManager.
//
// It watches the modem's health: a run of timeouts marks it silent; a boot
// banner, or echo returning after ATE0 turned it off, marks a reboot. Either
// way, once the modem answers again the engine replays Options.Init and
// reports the re-initialisation on Events.
package at
