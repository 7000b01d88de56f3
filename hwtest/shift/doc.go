// Package shift is the evidence chain's end-to-end scenario
// (docs/evidence.md, "A 24-hour shift"): the real agent reads a simulated
// shift of 1 Hz fixes from a GPS receiver on a pseudo-terminal, at the
// rate the agent takes them, and sends through a real broker into the
// real platform (ingest into PostgreSQL from Debian, or SQLite in
// process); the device key is enrolled, the shift exported as an
// evidence bundle from the database, and verified.
package shift
