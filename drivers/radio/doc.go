// Package radio reports the state of a TETRA radio or an LTE modem as
// Kestrel records, over the AT command engine of package at.
//
// Standards:
//   - TETRA: ETSI EN 300 392-5 (Peripheral Equipment Interface): AT+CSQ,
//     AT+CREG and its URC, AT+CTOM (operating mode, TMO or DMO), AT+CNUMF
//     (own identity), AT+CTGS (selected talkgroup), +CTSDSR (incoming status
//     and SDS), +CTXD (transmit demand, priority 3 is emergency), +CTICN
//     (incoming call, call priority 15 is emergency). SDS-TL text per
//     ETSI EN 300 392-2 clause 29; pre-coded status 0 is "emergency"
//     (EN 300 392-2 clause 14.8.34).
//   - LTE: 3GPP TS 27.007: +CSQ (8.5), +CESQ (8.69, RSRQ and RSRP),
//     +CEREG (10.1.22, with TAC and cell identity), +COPS (7.3), +CGSN
//     (IMEI, 5.4), and the widespread vendor AT+CCID for the ICCID.
//
// A Radio emits *kestrel.RadioStatus when something changes (signal only
// when it moves by the hysteresis, 3 dB by default) and as a heartbeat, and
// *kestrel.Event for emergencies, status messages, SDS and modem resets.
package radio
