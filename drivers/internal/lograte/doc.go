// Package lograte owns the thinning of warnings that input from outside
// the device (a noisy serial line, a modem flooding unsolicited result
// codes, a radio sending what no parser takes) can repeat without bound:
// the first occurrence is logged, then at most one per interval, each with
// the count of occurrences so far and of those that were not logged. What
// is logged is the caller's choice; it must never be a message's content.
package lograte
