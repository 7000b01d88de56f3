package kernelrig

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { Main(m) }

// TestBoot boots the rig with every module it offers loaded, and reads
// back what the guest wrote on a virtio disk.
func TestBoot(t *testing.T) {
	if InGuest() {
		t.Skip("host half")
	}
	disk := filepath.Join(t.TempDir(), "out.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	mods := append(append(append([]string{}, DiskModules...), NetModules...), USBSerialModules...)
	res := Run(t, Guest{Test: "TestBootGuest", Modules: mods, Disks: []string{disk}})
	if !strings.Contains(res.Console, "--- PASS: TestBootGuest") {
		t.Fatalf("guest test did not pass:\n%s", res.Console)
	}
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := bytes.Cut(b, []byte{0})
	for _, m := range []string{"dm_log_writes", "dm_flakey", "sch_netem", "loop", "virtio_blk", "ext4", "dummy_hcd", "g_serial", "cdc_acm"} {
		if !bytes.Contains(got, []byte("\n"+m+" ")) {
			t.Errorf("module %s not loaded in the guest; /proc/modules:\n%s", m, got)
		}
	}
}

// TestBootGuest copies /proc/modules to the first virtio disk.
func TestBootGuest(t *testing.T) {
	SkipOnHost(t)
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	var u unix.Utsname
	unix.Uname(&u)
	t.Logf("guest kernel %s, %d modules", unix.ByteSliceToString(u.Release[:]), bytes.Count(mods, []byte("\n")))
	f, err := os.OpenFile("/dev/vda", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append([]byte("\n"), mods...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestCPIOHeader(t *testing.T) {
	var b bytes.Buffer
	c := NewCPIO(&b)
	if err := c.File("init", 0o755, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := c.File("init", 0o755, nil); err == nil {
		t.Fatal("a name added twice was accepted")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	// magic, ino 1, mode 0100755, filesize 3, namesize 5 ("init\0")
	if !strings.HasPrefix(s, "070701"+"00000001"+"000081ED") || s[6+6*8:6+7*8] != "00000003" || s[6+11*8:6+12*8] != "00000005" {
		t.Fatalf("header %q", s[:110])
	}
	if len(s)%4 != 0 || !strings.Contains(s, "TRAILER!!!\x00") {
		t.Fatalf("archive not padded or no trailer: %d bytes", len(s))
	}
}
