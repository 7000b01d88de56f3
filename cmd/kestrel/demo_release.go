//go:build kestrel_release

package main

import "errors"

// The device release build (the kestrel_release tag of "make dist" and
// CI's size check) leaves the demo out: its in-process broker, simulators
// and SQLite store would not fit the 10 MB budget and have no use on a
// device. "go run ./cmd/kestrel demo" (no tag) has it.
func runDemo([]string, stdio) error {
	return errors.New("this is the device release build (tag kestrel_release), which has no demo: run `go run ./cmd/kestrel demo` from the source tree")
}
