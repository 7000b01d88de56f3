package kernelrig

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"os"
	"strings"
)

// initramfs layout: /init is the test binary; /modules/NNN-name.ko are
// loaded by Main in the order of /modules/order.
const (
	modDir    = "modules"
	modOrder  = "modules/order"
	initPath  = "init"
	guestEnv  = "kestrel_rig_guest" // kernel command line: the test to run in the guest
	exitToken = "kestrel-rig: exit "
)

// BuildInitramfs writes a gzipped newc cpio to out holding init as /init
// and mods under /modules.
func BuildInitramfs(out, init string, mods []Module) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	c := NewCPIO(zw)
	bin, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "mnt", modDir} {
		if err := c.Dir(d); err != nil {
			return err
		}
	}
	if err := c.File(initPath, 0o755, bin); err != nil {
		return err
	}
	var order strings.Builder
	for i, m := range mods {
		b, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		name := fmt.Sprintf("%03d-%s.ko", i, m.Name)
		if err := c.File(modDir+"/"+name, 0o644, b); err != nil {
			return err
		}
		order.WriteString(name + "\n")
	}
	if err := c.File(modOrder, 0o644, []byte(order.String())); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
