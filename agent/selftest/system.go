package selftest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/firmware-hooks/execaudit"
	"github.com/kestrel-edge/kestrel/firmware-hooks/linkstats"
)

// Clock limits. Record times are evidence: a clock off by more than a
// couple of seconds from GPS is worth a look, by more than a minute it is
// wrong.
const (
	clockWarn = 2 * time.Second
	clockFail = time.Minute
	minYear   = 2024
)

const hintClock = "enable time sync (chrony or systemd-timesyncd: timedatectl), or an RTC with a good battery"

func checkClock(now time.Time, gc gpsClock) Result {
	if now.Year() < minYear {
		return fail(fmt.Sprintf("system clock says %s, before %d: never set", now.UTC().Format(time.RFC3339), minYear),
			"records would carry wrong times: "+hintClock)
	}
	if gc.ok {
		off := gc.offset
		abs := off
		if abs < 0 {
			abs = -abs
		}
		dir := "ahead of"
		if off < 0 {
			dir = "behind"
		}
		detail := fmt.Sprintf("%s %s GPS time", span(abs), dir)
		switch {
		case abs > clockFail:
			return fail("system clock is "+detail+fmt.Sprintf(" (GPS says %s)", gc.fix.UTC().Format(time.RFC3339)),
				"set the clock (chronyc makestep) and "+hintClock+"; if GPS time looks wrong, check the receiver")
		case abs > clockWarn:
			return warn("system clock is "+detail, hintClock+"; chrony can take GPS time as a source")
		}
		return pass("system clock " + detail)
	}
	// No GPS time to compare: ask the kernel whether a time daemon keeps
	// the clock disciplined.
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err == nil && (state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0) {
		return warn(fmt.Sprintf("%s, not synchronised (no NTP), no GPS fix to compare", now.UTC().Format(time.RFC3339)), hintClock)
	}
	return pass(fmt.Sprintf("%s, synchronised", now.UTC().Format(time.RFC3339)))
}

// checkSpool creates the spool directory if needed, proves it takes a
// synced write, and checks the room left for it to grow to its bound.
func checkSpool(c config.Spool) Result {
	dir := c.Dir
	if dir == "" {
		return fail("spool.dir is empty", "set spool.dir to a directory on persistent flash, e.g. /var/lib/kestrel/spool")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(fmt.Sprintf("cannot create %s: %v", dir, errors.Unwrap(err)),
			"create it for the agent's user: install -d -m 700 -o kestrel "+dir)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fail(err.Error(), "")
	}
	if !fi.IsDir() {
		return fail(dir+" is not a directory", "point spool.dir at a directory")
	}
	f, err := os.CreateTemp(dir, ".selftest-*")
	if err != nil {
		return fail(fmt.Sprintf("%s is not writable: %v", dir, errors.Unwrap(err)),
			"read-only filesystem (mount | grep ro,) or wrong owner: chown the directory to the agent's user")
	}
	probe := make([]byte, 4096)
	_, werr := f.Write(probe)
	serr := f.Sync()
	cerr := f.Close()
	os.Remove(f.Name())
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fail(fmt.Sprintf("write and sync in %s failed: %v", dir, err), "the flash may be failing or full: check dmesg and df")
	}

	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return warn(fmt.Sprintf("writable, but free space unknown: %v", err), "")
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	total := int64(st.Blocks) * int64(st.Bsize)
	used := dirSize(dir)
	need := max(c.MaxBytes-used, 0)
	detail := fmt.Sprintf("%s writable; %s free of %s, spool holds %s of %s max",
		dir, human(free), human(total), human(used), human(c.MaxBytes))

	var notes []string
	var hints []string
	if fsType := uint32(st.Type); fsType == unix.TMPFS_MAGIC || fsType == unix.RAMFS_MAGIC {
		notes = append(notes, "on a RAM filesystem: lost at power off")
		hints = append(hints, "put spool.dir on persistent flash")
	}
	if free < 2*need || (total > 0 && free*10 < total) {
		notes = append(notes, "little free space for the spool to grow")
		hints = append(hints, "free space, or lower spool.max_bytes")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		notes = append(notes, fmt.Sprintf("mode %04o lets others read the data", fi.Mode().Perm()))
		hints = append(hints, "chmod 700 "+dir)
	}
	if len(notes) > 0 {
		return warn(detail+"; "+strings.Join(notes, "; "), strings.Join(hints, "; "))
	}
	return pass(detail)
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// checkEBPF loads the hooks and closes them again. A kernel that refuses
// is a warning: the agent runs without the exec audit and counts link
// traffic from /proc/net/dev.
func checkEBPF(h config.Hooks, o *Options) Result {
	if !h.EBPF {
		return skip("disabled (hooks.ebpf = false)")
	}
	var reasons []string
	unsupported := false
	ea, err := execaudit.New(execaudit.Options{Allow: execaudit.DefaultAllow, Logger: o.Logger})
	if err != nil {
		reasons = append(reasons, "exec audit: "+err.Error())
		unsupported = errors.Is(err, execaudit.ErrUnsupported)
	} else {
		ea.Close()
	}
	ls := linkstats.New(linkstats.Options{Logger: o.Logger})
	if err := ls.Reason(); err != nil {
		reasons = append(reasons, "link counters: "+err.Error()+" (using /proc/net/dev)")
		unsupported = unsupported || errors.Is(err, linkstats.ErrUnsupported)
	}
	ls.Close()
	if len(reasons) > 0 {
		hint := "the agent runs without them; run as root (or with CAP_BPF and CAP_PERFMON) on a kernel with BTF and tracefs"
		if unsupported {
			hint = "not on this architecture (32-bit ARM): the agent counts link traffic from /proc/net/dev and runs without the exec audit; set hooks.ebpf = false to silence this"
		}
		return warn("unavailable: "+strings.Join(reasons, "; "), hint)
	}
	return pass("exec audit and link counters load and attach")
}

// checkSocket checks the firmware event socket can be made (or is there,
// made by a running agent). It does not connect: the agent would log a
// client that says nothing.
func checkSocket(h config.Hooks) Result {
	if h.Socket == "" {
		return skip("not configured (hooks.socket is empty)")
	}
	if fi, err := os.Stat(h.Socket); err == nil {
		if fi.Mode()&os.ModeSocket != 0 {
			return pass(h.Socket + " exists (made by a running agent, or left by one: the agent replaces a stale socket)")
		}
		return fail(h.Socket+" exists and is not a socket", "remove it or choose another hooks.socket")
	}
	dir := filepath.Dir(h.Socket)
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			if err := unix.Access(d, unix.W_OK|unix.X_OK); err != nil {
				return fail(fmt.Sprintf("the agent cannot create %s: %s not writable", h.Socket, d),
					"create "+dir+" for the agent's user (systemd: RuntimeDirectory=kestrel)")
			}
			return pass(fmt.Sprintf("%s can be created", h.Socket))
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return fail("no existing parent directory for "+h.Socket, "fix hooks.socket")
}

// span writes a clock error readably: "418ms", "3m12s", "2169.4 days".
func span(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%.1f days", d.Hours()/24)
	}
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}
