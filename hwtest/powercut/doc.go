// Package powercut is the spool's power-cut test on a real kernel, in the
// manner of CrashMonkey: the spool workload runs in a qemu guest
// (hwtest/kernelrig) on ext4 over dm-log-writes on a virtio disk, and the
// host replays the recorded block writes to crash states (every flush and
// FUA point within a budget, and points between them with subsets of the
// writes no flush has covered yet: a volatile write cache may lose or
// reorder those), mounts each state (ext4 journal recovery), opens the
// spool and checks it against what the workload was told.
//
// See docs/spool.md, "Power cuts on a real kernel", for the model, the
// checks and the results.
package powercut
