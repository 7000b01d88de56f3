package kernelrig

import (
	"fmt"
	"io"
	"strings"
)

// CPIO writes the "newc" (SVR4, no CRC) cpio format the kernel unpacks into
// its initramfs (Documentation/driver-api/early-userspace/buffer-format.rst):
// a 110-byte ASCII header per file, the NUL-terminated name and the data,
// each padded to 4 bytes, ending with the entry TRAILER!!!.
type CPIO struct {
	w     io.Writer
	ino   uint32
	err   error
	n     int64
	names map[string]bool
}

// NewCPIO writes an archive to w; Close writes the trailer.
func NewCPIO(w io.Writer) *CPIO { return &CPIO{w: w, ino: 1, names: map[string]bool{}} }

// File modes (the S_IF* bits of stat(2)).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
)

func (c *CPIO) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *CPIO) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *CPIO) entry(name string, mode uint32, data []byte) error {
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio: bad name %q", name)
	}
	if name != "TRAILER!!!" {
		if c.names[name] {
			return fmt.Errorf("cpio: %s added twice", name)
		}
		c.names[name] = true
	}
	nlink := 1
	if mode&modeDir != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
	return c.err
}

// Dir adds a directory (parents first: the kernel does not create them).
func (c *CPIO) Dir(name string) error { return c.entry(name, modeDir|0o755, nil) }

// File adds a regular file with permissions perm.
func (c *CPIO) File(name string, perm uint32, data []byte) error {
	return c.entry(name, modeFile|perm&0o7777, data)
}

// Close writes the trailer. It does not close the underlying writer.
func (c *CPIO) Close() error { return c.entry("TRAILER!!!", 0, nil) }
