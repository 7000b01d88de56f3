package linkfault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Gadget is the USB serial gadget (g_serial over dummy_hcd) as the host
// side sees it: a USB device whose unplug is its deauthorisation
// (/sys/bus/usb/devices/B-P/authorized, Documentation/usb/authorization.rst),
// one of the two methods real-kernel-rig.md found to re-enumerate cleanly.
type Gadget struct {
	sysdir string // /sys/bus/usb/devices/1-1
	Node   string // /dev/ttyACM0
}

// FindGadget waits for the gadget serial device to enumerate and its ACM
// node to appear.
func FindGadget(ctx context.Context, node string) (*Gadget, error) {
	for {
		devs, _ := filepath.Glob("/sys/bus/usb/devices/*/product")
		for _, p := range devs {
			b, err := os.ReadFile(p)
			dir := filepath.Dir(p)
			if err != nil || strings.HasPrefix(filepath.Base(dir), "usb") {
				continue
			}
			if strings.HasPrefix(string(b), "Gadget Serial") {
				g := &Gadget{sysdir: dir, Node: node}
				if _, err := g.WaitNode(ctx, true); err != nil {
					return nil, err
				}
				return g, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no gadget serial device on the USB bus: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Unplug deauthorises the device: the host unbinds cdc-acm (the node goes)
// and the gadget sees its configuration dropped, as on a cable pull.
func (g *Gadget) Unplug() error { return g.authorize("0") }

// Plug authorises it again: the host configures it and cdc-acm binds.
func (g *Gadget) Plug() error { return g.authorize("1") }

func (g *Gadget) authorize(v string) error {
	if err := os.WriteFile(filepath.Join(g.sysdir, "authorized"), []byte(v), 0); err != nil {
		return fmt.Errorf("usb %s authorized=%s: %w", filepath.Base(g.sysdir), v, err)
	}
	return nil
}

// WaitNode polls (every millisecond: the time it returns is the
// measurement's start) until the node exists (present) or not, and
// returns when it saw the change.
func (g *Gadget) WaitNode(ctx context.Context, present bool) (time.Time, error) {
	for {
		_, err := os.Stat(g.Node)
		if (err == nil) == present {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s present=%v: %w", g.Node, present, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}
