package kernelrig

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// InGuest reports whether this process is /init of a rig guest.
func InGuest() bool { return os.Getpid() == 1 && os.Getenv(guestEnv) != "" }

// SkipOnHost skips a test that only makes sense inside the guest.
func SkipOnHost(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("runs inside the kernel rig's guest only")
	}
}

// Main is a test package's TestMain. On the host it runs the tests as
// usual. As the guest's /init it mounts the pseudo filesystems, loads the
// modules, brings up lo, runs the one test the host asked for, prints its
// exit status on the console and powers the machine off.
func Main(m *testing.M) {
	if !InGuest() {
		os.Exit(m.Run())
	}
	code := 1
	if err := guestSetup(); err != nil {
		fmt.Printf("kestrel-rig: setup: %v\n", err)
	} else {
		os.Args = []string{"/init", "-test.run=^(" + os.Getenv(guestEnv) + ")$", "-test.v", "-test.count=1"}
		code = m.Run()
	}
	fmt.Printf("\n%s%d\n", exitToken, code)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // pid 1 must not exit: the kernel would panic
}

func guestSetup() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	order, err := os.ReadFile("/" + modOrder)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(order)) {
		if err := loadModule("/" + modDir + "/" + name); err != nil {
			return err
		}
	}
	return loopbackUp()
}

// loopbackUp brings lo up (the kernel leaves it down; there is no init
// system in the guest to do it), for tests that talk to 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
