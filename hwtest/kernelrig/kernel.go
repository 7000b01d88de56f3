package kernelrig

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// Kernel is an unpacked Debian linux-image package.
type Kernel struct {
	Package string // e.g. linux-image-6.1.0-57-amd64
	Version string // e.g. 6.1.0-57-amd64 (the modules directory)
	Root    string // where dpkg-deb -x put it
	Vmlinuz string
}

// ErrUnavailable wraps every reason the rig cannot be had on this machine
// (no qemu, no apt, no package): tests skip on it and say why.
var ErrUnavailable = errors.New("kernel rig unavailable")

// CacheDir is where kernels are kept between runs, outside the repository.
func CacheDir() string {
	if d := os.Getenv("KESTREL_RIG_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kestrel-rig")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/kestrel-rig"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "kestrel-rig")
	}
	return filepath.Join(os.TempDir(), "kestrel-rig")
}

var pkgName = regexp.MustCompile(`^linux-image-[0-9][A-Za-z0-9.+-]*$`)

// KernelPackage names the linux-image package to use: KESTREL_RIG_KERNEL_PKG,
// else the one linux-image-amd64 depends on (apt-cache depends).
func KernelPackage(ctx context.Context) (string, error) {
	if p := os.Getenv("KESTREL_RIG_KERNEL_PKG"); p != "" {
		if !pkgName.MatchString(p) {
			return "", fmt.Errorf("KESTREL_RIG_KERNEL_PKG=%q is not a linux-image package name", p)
		}
		return p, nil
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("%w: apt-cache depends linux-image-amd64: %v (run apt-get update)", ErrUnavailable, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && pkgName.MatchString(f[1]) {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%w: apt-cache depends linux-image-amd64 names no linux-image package (run apt-get update): %q",
		ErrUnavailable, out)
}

// Fetch returns the kernel package, downloading and unpacking it into the
// cache on first use. Concurrent callers (parallel test binaries) wait for
// one another on a lock file.
func Fetch(ctx context.Context) (*Kernel, error) {
	pkg, err := KernelPackage(ctx)
	if err != nil {
		return nil, err
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("%w: kernel cache: %v", ErrUnavailable, err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	k := &Kernel{Package: pkg, Version: strings.TrimPrefix(pkg, "linux-image-"), Root: filepath.Join(cache, pkg)}
	k.Vmlinuz = filepath.Join(k.Root, "boot", "vmlinuz-"+k.Version)
	stamp := filepath.Join(k.Root, ".kestrel-ready")
	if _, err := os.Stat(stamp); err == nil {
		return k, nil
	}
	for _, tool := range []string{"apt-get", "dpkg-deb", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%w: %s not found (Debian packages apt, dpkg, kmod)", ErrUnavailable, tool)
		}
	}
	dl := filepath.Join(cache, "download")
	os.RemoveAll(dl)
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dl)
	run := func(dir, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := run(dl, "apt-get", "download", "-q", pkg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("%w: apt-get download %s left %d packages", ErrUnavailable, pkg, len(debs))
	}
	os.RemoveAll(k.Root)
	if err := run(dl, "dpkg-deb", "-x", debs[0], k.Root); err != nil {
		return nil, err
	}
	if err := run(dl, "depmod", "-b", k.Root, k.Version); err != nil {
		return nil, err
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("kernel package %s has no %s", pkg, k.Vmlinuz)
	}
	if err := os.WriteFile(stamp, []byte(debs[0]+"\n"), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// Module is one kernel module file to load in the guest.
type Module struct {
	Name string // as the kernel calls it (underscores)
	Path string // absolute, on the host
}

func modName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, ".xz"), ".zst"), ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Modules resolves names (dashes or underscores, as modprobe takes them)
// into a load order, each module after the modules it depends on
// (modules.dep, written by depmod). Modules built into the kernel
// (modules.builtin) are left out. A module named twice is loaded once.
func (k *Kernel) Modules(names ...string) ([]Module, error) {
	base := filepath.Join(k.Root, "lib", "modules", k.Version)
	deps := map[string][]string{} // name -> dep names
	paths := map[string]string{}
	dep, err := os.ReadFile(filepath.Join(base, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w (depmod not run?)", k.Version, err)
	}
	for _, line := range strings.Split(string(dep), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n := modName(mod)
		paths[n] = filepath.Join(base, mod)
		for _, d := range strings.Fields(rest) {
			deps[n] = append(deps[n], modName(d))
		}
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(base, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			builtin[modName(line)] = true
		}
	}
	var (
		order []Module
		state = map[string]int{} // 1 visiting, 2 done
		visit func(n string) error
	)
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle", n)
		case 2:
			return nil
		}
		state[n] = 1
		for _, d := range deps[n] {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, Module{Name: n, Path: paths[n]})
		return nil
	}
	for _, raw := range names {
		n := modName(raw)
		if _, ok := paths[n]; !ok {
			if builtin[n] {
				continue
			}
			return nil, fmt.Errorf("kernel %s has no module %s", k.Version, raw)
		}
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}
