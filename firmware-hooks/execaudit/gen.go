package execaudit

// Little-endian linux only (amd64, arm64); see ebpf_other.go for the rest.
//go:generate go tool bpf2go -tags "linux,amd64 linux,arm64" -target bpfel -type exec_event execaudit execaudit.c
