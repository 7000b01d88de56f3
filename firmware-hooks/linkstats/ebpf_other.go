//go:build !(linux && (amd64 || arm64))

package linkstats

import "github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"

// ebpfBuilt says this build carries the eBPF programs.
const ebpfBuilt = false

// openEBPF: cilium/ebpf does not support this architecture (32-bit ARM
// among them), so the Source always reads /proc/net/dev here.
func openEBPF() (counterReader, error) {
	return nil, probe.Unavailable("linkstats", "probe", probe.ErrUnsupported)
}
