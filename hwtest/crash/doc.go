// Package crash holds the spool's power-cut test: a child process appends
// and commits at full speed while the parent kills it with SIGKILL at random
// moments, then reopens the spool and checks that nothing reported durable
// was lost, nothing came back twice and no sequence number was reused.
//
// go test ./hwtest/crash runs 200 cycles; KESTREL_CRASH_CYCLES=5000 runs
// more. SIGKILL stops the process, not the kernel: it tests the spool's
// write ordering and its recovery from writes the kernel abandoned between
// pages, not the disk's cache. The torn writes a real power cut leaves on
// the medium are covered by the spool's own recovery tests, which cut
// segment files at every byte.
package crash
