//go:build kestrel_nosync

package spool

import "os"

// NoSync is true in this build: every fsync, fdatasync and directory sync
// of the spool is a no-op. It exists only so that a durability test can be
// shown to fail without durability (docs/spool.md); never ship it.
const NoSync = true

func fdatasync(*os.File) error { return nil }

func syncDir(*os.File) error { return nil }
