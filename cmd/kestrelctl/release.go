package main

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/delta"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

const releaseUsage = `usage: kestrelctl release sign --fleet F [--all|--group G|--device D]
    --version V --seq N --binary FILE --goos OS --goarch ARCH [--goarm 7]
    --expires DUR [--min-from N] [--allow-downgrade]
    [--base-binary FILE --base-seq N] [--url https://...] [--spool-formats 1,2]
    [--chunk-size BYTES] [--notes TEXT] --sign-key KEY [--sign-key KEY2]
    [--out FILE] [--delta-out FILE] [--force] [--json]

Writes a signed release manifest (kestrel-release/1, docs/ota.md) for FILE:
its SHA-256 and size, the platform it runs on, the release number --seq
(the anti-rollback counter: a device installs only a higher one unless
--allow-downgrade is signed in), its expiry, and the spool formats it reads.
Sign with keys that the devices trust with the release role (keygen makes
them; a device lists them as "release:BASE64KEY" in remote.trusted_keys).
With --base-binary, also writes a kestrel-bsdiff/1 delta from that binary
(release --base-seq) and names it in the manifest: devices running the base
fetch the delta instead of the whole binary. The manifest is addressed to
the fleet (default), a group or a device; kestrelctl update push publishes
it. It refuses to sign a manifest that is already expired, a binary whose
ELF header names another architecture, and a delta that does not
reproduce the binary.

flags:`

func runRelease(args []string, s stdio) error {
	if len(args) == 0 || args[0] != "sign" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(s.stdout, releaseUsage)
			return nil
		}
		fmt.Fprintln(s.stderr, "usage: kestrelctl release sign [flags] (see kestrelctl release sign -h)")
		return fmt.Errorf("%w: want release sign", errUsage)
	}
	return releaseSign(args[1:], s)
}

// releaseOut is what release sign --json prints.
type releaseOut struct {
	Manifest string         `json:"manifest"`
	Delta    string         `json:"delta,omitempty"`
	Release  *fleet.Release `json:"release"`
}

func releaseSign(args []string, s stdio) error {
	fs := flag.NewFlagSet("release sign", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	fs.Usage = func() { fmt.Fprintln(s.stderr, releaseUsage); fs.PrintDefaults() }
	fleetID := fs.String("fleet", os.Getenv(fleetconn.FleetEnv), "fleet id (default $"+fleetconn.FleetEnv+")")
	tf := addTargetFlags(fs)
	version := fs.String("version", "", "the release's version string (as kestrel version prints it)")
	seq := fs.Uint64("seq", 0, "release number `N`: the anti-rollback counter, above every earlier release")
	binary := fs.String("binary", "", "the agent binary `FILE`")
	goos := fs.String("goos", "linux", "the binary's GOOS")
	goarch := fs.String("goarch", "", "the binary's GOARCH (arm, arm64, amd64)")
	goarm := fs.String("goarm", "", "the binary's GOARM for arm (5, 6, 7)")
	expires := fs.Duration("expires", 0, "the manifest expires this long from now (e.g. 720h); devices refuse it after")
	minFrom := fs.Uint64("min-from", 0, "devices running a release below `N` refuse it (0: any)")
	downgrade := fs.Bool("allow-downgrade", false, "let devices running a higher release install this one (signed in)")
	base := fs.String("base-binary", "", "also make a delta from this `FILE` (the base release's binary)")
	baseSeq := fs.Uint64("base-seq", 0, "the base binary's release number")
	url := fs.String("url", "", "an https:// URL the binary can also be fetched from")
	spool := fs.String("spool-formats", "1", "comma-separated spool formats the release reads")
	chunk := fs.Int("chunk-size", fleet.DefaultChunkSize, "bytes per retained chunk message")
	notes := fs.String("notes", "", "release notes (at most 1024 bytes)")
	out := fs.String("out", "", "manifest `FILE` (default kestrel-VERSION.release.json)")
	deltaOut := fs.String("delta-out", "", "delta `FILE` (default kestrel-VERSION.delta)")
	force := fs.Bool("force", false, "overwrite existing files")
	keys := addSignKeyFlag(fs)
	asJSON := addJSONFlag(fs)
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	switch {
	case *fleetID == "":
		return fmt.Errorf("%w: --fleet (or $%s) is required", errUsage, fleetconn.FleetEnv)
	case *version == "" || *seq == 0 || *binary == "" || *goarch == "":
		return fmt.Errorf("%w: --version, --seq, --binary and --goarch are required", errUsage)
	case *expires <= 0:
		return fmt.Errorf("%w: --expires %s: a release must expire in the future (e.g. --expires 720h); not signed", errUsage, *expires)
	case (*base == "") != (*baseSeq == 0):
		return fmt.Errorf("%w: --base-binary and --base-seq go together", errUsage)
	}
	tg := fleet.AllDevices(*fleetID)
	if *tf.device != "" || *tf.group != "" || *tf.all {
		var err error
		if tg, err = tf.target(*fleetID); err != nil {
			return err
		}
	}
	var formats []int
	for _, f := range strings.Split(*spool, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%w: --spool-formats %q: want numbers like 1,2", errUsage, *spool)
		}
		formats = append(formats, n)
	}
	privs, err := loadSigningKeys(*keys)
	if err != nil {
		return err
	}
	bin, err := readBounded(*binary)
	if err != nil {
		return err
	}
	if err := checkELF(bin, *goos, *goarch); err != nil {
		return fmt.Errorf("%s: %w; not signed", *binary, err)
	}
	now := time.Now()
	r := fleet.Release{Fleet: tg.Fleet, Scope: tg.Scope, Version: *version, Seq: *seq, GOOS: *goos, GOARCH: *goarch, GOARM: *goarm,
		SHA256: sha256hex(bin), Size: int64(len(bin)), ChunkSize: *chunk, MinFromSeq: *minFrom, SpoolFormats: formats,
		Issued: now.UnixMilli(), Expires: now.Add(*expires).UnixMilli(), AllowDowngrade: *downgrade, URL: *url, Notes: *notes}
	var patch []byte
	if *base != "" {
		old, err := readBounded(*base)
		if err != nil {
			return err
		}
		if patch, err = delta.Diff(old, bin); err != nil {
			return fmt.Errorf("delta: %w", err)
		}
		// The delta goes out only if it gives back the very binary.
		if back, err := delta.Patch(old, patch, int64(len(bin))); err != nil || !bytes.Equal(back, bin) {
			return fmt.Errorf("delta from %s does not reproduce %s (%v); not signed", *base, *binary, err)
		}
		r.Delta = &fleet.Delta{Format: fleet.DeltaFormat, BaseSeq: *baseSeq, BaseSHA256: sha256hex(old), SHA256: sha256hex(patch), Size: int64(len(patch))}
	}
	manifest, err := fleet.SignRelease(privs, r)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = "kestrel-" + safeName(*version) + ".release.json"
	}
	if *deltaOut == "" {
		*deltaOut = "kestrel-" + safeName(*version) + ".delta"
	}
	if err := writeNew(*out, append(manifest, '\n'), *force); err != nil {
		return err
	}
	res := releaseOut{Manifest: *out}
	if patch != nil {
		if err := writeNew(*deltaOut, patch, *force); err != nil {
			return err
		}
		res.Delta = *deltaOut
	}
	if res.Release, err = fleet.DecodeRelease(manifest); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(s.stdout, res)
	}
	fmt.Fprintf(s.stdout, "release %s (seq %d) for %s/%s%s, %d bytes, sha256 %s\nsigned by %s, expires %s, addressed to %s\nmanifest %s\n",
		r.Version, r.Seq, r.GOOS, r.GOARCH, armName(r.GOARM), r.Size, r.SHA256, keyIDs(privs),
		time.UnixMilli(r.Expires).UTC().Format(time.RFC3339), tg, *out)
	if r.Delta != nil {
		fmt.Fprintf(s.stdout, "delta %s from seq %d: %d bytes (%.1f%% of the binary)\n", *deltaOut, r.Delta.BaseSeq, r.Delta.Size,
			100*float64(r.Delta.Size)/float64(r.Size))
	}
	return nil
}

func armName(goarm string) string {
	if goarm == "" {
		return ""
	}
	return "v" + goarm
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func safeName(v string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, v)
}

// readBounded reads a binary, refusing one over the manifest's limit.
func readBounded(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > fleet.MaxReleaseSize {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte release limit", path, st.Size(), fleet.MaxReleaseSize)
	}
	return os.ReadFile(path)
}

// checkELF refuses a binary whose ELF header names another OS class or
// machine than --goos/--goarch; a non-ELF file is left to the device.
func checkELF(b []byte, goos, goarch string) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		if goos == "linux" {
			return fmt.Errorf("not an ELF executable (%v)", err)
		}
		return nil
	}
	want := map[string]elf.Machine{"arm": elf.EM_ARM, "arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64, "386": elf.EM_386,
		"riscv64": elf.EM_RISCV, "mips": elf.EM_MIPS, "mipsle": elf.EM_MIPS}
	if m, ok := want[goarch]; ok && f.Machine != m {
		return fmt.Errorf("the ELF header says %s, not --goarch %s", f.Machine, goarch)
	}
	return nil
}

// writeNew writes a file, refusing to overwrite unless force.
func writeNew(path string, b []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists (use --force to overwrite)", path)
	} else if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
