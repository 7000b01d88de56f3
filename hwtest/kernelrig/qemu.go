package kernelrig

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Guest describes one boot.
type Guest struct {
	Test    string            // the test function to run in the guest (a regexp alternative)
	Modules []string          // modules to load, dependencies resolved
	Env     map[string]string // environment of the guest test (kernel command line: no spaces)
	Disks   []string          // raw images, attached as /dev/vda, /dev/vdb, ...
	QEMU    []string          // extra qemu arguments (a NIC, for example)
	Tags    string            // build tags, when the guest binary must be rebuilt
	Timeout time.Duration     // whole boot; default 5 minutes
	MemMiB  int               // default 768
	CPUs    int               // default 2
	// Report, when set, marks the console lines that carry the guest's
	// figures: Run logs each line holding it, from there on, whether the
	// guest test passed or not.
	Report string
}

// Result is what one boot produced.
type Result struct {
	Console string
	Accel   string // "kvm" or "tcg"
	Elapsed time.Duration
}

// Run boots a guest that runs g.Test and fails t unless that test passed.
// It skips t only when the rig cannot be had (no qemu-system-x86_64, no
// kernel package), saying why; with KESTREL_RIG_REQUIRED=1 (CI) that fails
// t instead.
func Run(t testing.TB, g Guest) Result {
	t.Helper()
	res, err := Boot(t, g)
	if g.Report != "" {
		for _, l := range strings.Split(res.Console, "\n") {
			if _, fig, ok := strings.Cut(l, g.Report); ok {
				t.Log(g.Report + strings.TrimSpace(fig))
			}
		}
	}
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv("KESTREL_RIG_REQUIRED") == "1" {
			t.Fatalf("real-kernel rig required (KESTREL_RIG_REQUIRED=1): %v", err)
		}
		t.Skipf("real-kernel rig: %v", err)
	}
	if err != nil {
		t.Fatalf("real-kernel rig: %v\nconsole:\n%s", err, tail(res.Console, 200))
	}
	return res
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Boot is Run returning errors instead of failing t. t is used for temp
// files and logging.
func Boot(t testing.TB, g Guest) (Result, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return Result{}, fmt.Errorf("%w: qemu-system-x86_64 not found (Debian package qemu-system-x86)", ErrUnavailable)
	}
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	k, err := Fetch(ctx)
	if err != nil {
		return Result{}, err
	}
	mods, err := k.Modules(g.Modules...)
	if err != nil {
		return Result{}, err
	}
	dir := t.TempDir()
	bin, err := selfBinary(ctx, dir, g.Tags)
	if err != nil {
		return Result{}, err
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := BuildInitramfs(initrd, bin, mods); err != nil {
		return Result{}, fmt.Errorf("initramfs: %w", err)
	}
	accel := Accel(qemu, k)
	cmdline := []string{"console=ttyS0", "quiet", "panic=-1", guestEnv + "=" + g.Test}
	for key, v := range g.Env {
		if strings.ContainsAny(key+v, " \t\n\"") {
			return Result{}, fmt.Errorf("guest env %s=%q: no spaces or quotes on a kernel command line", key, v)
		}
		cmdline = append(cmdline, key+"="+v)
	}
	mem, cpus := g.MemMiB, g.CPUs
	if mem <= 0 {
		mem = 768
	}
	if cpus <= 0 {
		cpus = 2
	}
	args := append(qemuBase(accel, k.Vmlinuz, mem, cpus),
		"-initrd", initrd, "-append", strings.Join(cmdline, " "))
	for _, d := range g.Disks {
		args = append(args, "-drive", "file="+d+",format=raw,if=virtio,cache=unsafe")
	}
	args = append(args, g.QEMU...)
	start := time.Now()
	var console bytes.Buffer
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout = &console
	cmd.Stderr = &console
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	res := Result{Console: console.String(), Accel: accel, Elapsed: time.Since(start)}
	t.Logf("real-kernel rig: %s, %s, %d modules, booted and ran %s in %v",
		k.Package, accel, len(mods), g.Test, res.Elapsed.Round(time.Millisecond))
	if ctx.Err() != nil {
		return res, fmt.Errorf("guest did not power off within %v", timeout)
	}
	if err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	i := strings.LastIndex(res.Console, exitToken)
	if i < 0 {
		return res, errors.New("the guest ended without reporting its test's exit status (a panic in /init?)")
	}
	f := strings.Fields(res.Console[i+len(exitToken):])
	if len(f) == 0 || f[0] != "0" {
		return res, fmt.Errorf("the guest's %s failed (exit %v)", g.Test, f[:min(1, len(f))])
	}
	return res, nil
}

func qemuBase(accel, kernel string, mem, cpus int) []string {
	return []string{"-accel", accel, "-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio", "-no-reboot", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-kernel", kernel}
}

var (
	accelOnce sync.Once
	accelName string
)

// Accel picks KVM when it works and TCG otherwise. /dev/kvm can exist and
// still hang the guest before the kernel runs (real-kernel-rig.md), so the
// probe boots the kernel under KVM and waits a few seconds for its first
// console line. KESTREL_RIG_ACCEL=kvm|tcg skips the probe.
func Accel(qemu string, k *Kernel) string {
	accelOnce.Do(func() {
		accelName = os.Getenv("KESTREL_RIG_ACCEL")
		if accelName != "" {
			return
		}
		accelName = "tcg"
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
			return
		} else {
			f.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, qemu, append(qemuBase("kvm", k.Vmlinuz, 256, 1),
			"-append", "console=ttyS0 panic=-1")...)
		out, err := cmd.StdoutPipe()
		if err != nil || cmd.Start() != nil {
			return
		}
		seen := make(chan bool, 1)
		go func() {
			var buf bytes.Buffer
			b := make([]byte, 4096)
			for {
				n, err := out.Read(b)
				buf.Write(b[:n])
				if bytes.Contains(buf.Bytes(), []byte("Linux version")) {
					seen <- true
					io.Copy(io.Discard, out)
					return
				}
				if err != nil {
					seen <- false
					return
				}
			}
		}()
		select {
		case ok := <-seen:
			if ok {
				accelName = "kvm"
			}
		case <-ctx.Done():
		}
		cancel()
		cmd.Wait()
	})
	return accelName
}

// selfBinary is the test binary to put in the guest as /init: this one if
// it is statically linked, else a CGO_ENABLED=0 rebuild of the package in
// the current directory (go test runs a package's tests there).
func selfBinary(ctx context.Context, dir, tags string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if static(self) {
		return self, nil
	}
	out := filepath.Join(dir, "guest.test")
	args := []string{"test", "-c", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("static guest binary: go %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

func static(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Machine == elf.EM_X86_64
}
