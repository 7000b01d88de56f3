// Package loopfs gives tests a fresh filesystem of their own: an image file
// on /var/tmp attached to a loop device with losetup, made with mkfs.ext4
// and mounted in a temporary directory, all undone when the test ends. It
// needs root; where the kernel or the tools refuse, the test is skipped
// with the reason. Fill takes the free space of any mounted filesystem (a
// recorder filling the partition under the spool).
package loopfs
