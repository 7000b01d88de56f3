package linkstats

// The eBPF object is built for little-endian targets only (amd64, arm64: the
// architectures cilium/ebpf supports that Kestrel ships) and only for linux;
// see ebpf_other.go for the rest.
//go:generate go tool bpf2go -tags "linux,amd64 linux,arm64" -target bpfel -type link_key -type link_counts linkstats linkstats.c
