// Package kernelrig boots Debian's own kernel under qemu-system-x86_64 with
// an initramfs that holds a static Go test binary as /init and the kernel
// modules the test needs: the real-kernel rig of DESIGN.md ("Testing with
// real parts"), for what the host's module-less kernel cannot do
// (dm-log-writes, dm-flakey, netem, a USB serial gadget).
//
// The kernel comes from the linux-image package behind linux-image-amd64,
// fetched with apt-get download and unpacked with dpkg-deb -x (never
// installed), cached outside the repository (KESTREL_RIG_CACHE, else
// $XDG_CACHE_HOME/kestrel-rig, else /var/cache/kestrel-rig as root or
// ~/.cache/kestrel-rig). The initramfs is a gzipped newc cpio written here
// in Go; no cpio tool is needed.
//
// A test package uses it in two halves of one binary:
//
//	func TestMain(m *testing.M) { kernelrig.Main(m) } // in the guest: set up, run, power off
//
//	func TestX(t *testing.T) {                        // on the host
//		out := kernelrig.Run(t, kernelrig.Guest{Test: "TestXGuest", Modules: [...]})
//	}
//	func TestXGuest(t *testing.T) { kernelrig.SkipOnHost(t); ... } // in the guest
//
// In the guest, Main mounts /proc, /sys, /dev (devtmpfs) and /tmp, loads
// the modules with finit_module(2) in dependency order (there is no modprobe
// in the guest), runs the named test, prints its exit status on the serial
// console and powers off with reboot(2). Results come back on the console
// and on virtio disks the host test reads after qemu exits.
//
// Facts this is built on: ../shared/notes/real-kernel-rig.md.
package kernelrig
