package loopfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ext4 mounts a fresh ext4 of the given size ("64M") made with mkfsArgs
// (after -q -F and no lazy init, whose background zeroing would count as the
// test's own writes) and returns the mount point and the loop device's
// name ("loop3"), or skips the test.
func Ext4(t testing.TB, size string, mkfsArgs ...string) (mnt, dev string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	img := filepath.Join("/var/tmp", fmt.Sprintf("kestrel-loopfs-%d-%d.img", os.Getpid(), time.Now().UnixNano()))
	if err := exec.Command("truncate", "-s", size, img).Run(); err != nil {
		t.Skip("truncate:", err)
	}
	t.Cleanup(func() { os.Remove(img) })
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skip("losetup:", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	args := append([]string{"-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"}, mkfsArgs...)
	if out, err := exec.Command("mkfs.ext4", append(args, loop)...).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	mnt = t.TempDir()
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		t.Skip("mount:", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt, filepath.Base(loop)
}

// Fill takes all but leave bytes of the filesystem at mnt with one file,
// recording.mp4 (a camera's recorder filling the partition under the
// spool). A write cut short by a filesystem filling faster is logged, not
// fatal: the medium is full either way.
func Fill(t testing.TB, mnt string, leave int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if err := os.WriteFile(filepath.Join(mnt, "recording.mp4"), make([]byte, max(free-leave, 0)), 0o600); err != nil {
		t.Logf("filling %s: %v", mnt, err)
	}
}
