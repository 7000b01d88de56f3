//go:build !kestrel_nosync

package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// NoSync reports whether this build turns the spool's syncs into no-ops
// (the kestrel_nosync build tag, for testing the power-cut tests).
const NoSync = false

// fdatasync makes f's data durable: every group commit, the meta file and
// zeroed tails go through it, so that the kestrel_nosync build can remove
// all of them at once.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// syncDir makes a directory's entries (created, renamed, removed files)
// durable.
func syncDir(d *os.File) error { return d.Sync() }
