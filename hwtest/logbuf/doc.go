// Package logbuf owns the log sink that tests hand to a slog handler while
// the code under test writes to it from its own goroutines: a buffer safe
// for concurrent use, with what tests ask of it (the text, the lines that
// contain a string).
package logbuf
