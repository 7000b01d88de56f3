package kernelrig

// Module sets, in the load orders real-kernel-rig.md found to work; Modules
// adds what modules.dep says each needs. Modules that the kernel would fetch
// on demand through modprobe (which the guest does not have) are named
// explicitly: crc32c_generic for ext4's checksums, u_serial and usb_f_acm
// for g_serial's function.
var (
	// DiskModules: virtio disks, device-mapper targets for power cuts and
	// faults, ext4 and loop devices.
	DiskModules = []string{"virtio_pci", "virtio_blk", "dm_mod", "dm_log_writes", "dm_flakey",
		"crc32c_generic", "ext4", "loop"}
	// NetModules: a virtio NIC and netem.
	NetModules = []string{"virtio_pci", "virtio_net", "sch_netem"}
	// USBSerialModules: a gadget serial port (/dev/ttyGS0) and the host
	// driver that sees it as /dev/ttyACM0, over the dummy host controller.
	USBSerialModules = []string{"dummy_hcd", "libcomposite", "u_serial", "usb_f_acm", "g_serial", "cdc_acm"}
)
