//go:build ignore

// Per-interface traffic counters from the net:net_dev_xmit and
// net:netif_receive_skb tracepoints.
//
// Deliberately free of vmlinux.h and CO-RE: the tracepoint context structs
// below are copied from /sys/kernel/tracing/events/net/*/format, whose
// layout is part of the kernel's stable tracing ABI, so the object loads on
// kernels built without BTF as well.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>

// Values from include/uapi/linux/bpf.h and include/linux/netdevice.h.
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_NOEXIST 1
#define NETDEV_TX_OK 0x00
#define NETDEV_TX_BUSY 0x10
#define IFNAMSIZ 16

char __license[] SEC("license") = "Dual MIT/GPL";

struct link_key {
	char name[IFNAMSIZ];
};

struct link_counts {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_drops;
};

// Per-CPU so that the hot path needs no atomics; user space sums the CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct link_key);
	__type(value, struct link_counts);
} link_stats SEC(".maps");

// /sys/kernel/tracing/events/net/net_dev_xmit/format
struct net_dev_xmit_args {
	__u64 common; // common_type, common_flags, common_preempt_count, common_pid
	void *skbaddr;
	__u32 len;
	__s32 rc;
	__u32 name; // __data_loc char[]: offset in the low 16 bits, length in the high 16
};

// /sys/kernel/tracing/events/net/netif_receive_skb/format
struct netif_receive_skb_args {
	__u64 common;
	void *skbaddr;
	__u32 len;
	__u32 name; // __data_loc char[]
};

static __always_inline struct link_counts *counts_for(void *ctx, __u32 data_loc)
{
	struct link_key key = {};
	// bpf_probe_read_str rather than the _kernel_ variant (5.5+) so that
	// the vendor 4.14/4.19 kernels of older camera SoCs load this too; on
	// amd64 and arm64, the only targets built, both read kernel memory.
	bpf_probe_read_str(key.name, sizeof(key.name), (char *)ctx + (data_loc & 0xffff));

	struct link_counts *c = bpf_map_lookup_elem(&link_stats, &key);
	if (c)
		return c;
	struct link_counts zero = {};
	// BPF_NOEXIST: another CPU may have created the entry meanwhile; either
	// way the lookup below finds this CPU's slot.
	bpf_map_update_elem(&link_stats, &key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&link_stats, &key);
}

SEC("tracepoint/net/net_dev_xmit")
int net_dev_xmit(struct net_dev_xmit_args *args)
{
	struct link_counts *c = counts_for(args, args->name);
	if (!c)
		return 0;
	if (args->rc == NETDEV_TX_OK) {
		c->tx_bytes += args->len;
		c->tx_packets++;
	} else if (args->rc != NETDEV_TX_BUSY) {
		// NETDEV_TX_BUSY is requeued and retried, so it is not a loss;
		// anything else (NET_XMIT_DROP, -errno) is.
		c->tx_drops++;
	}
	return 0;
}

SEC("tracepoint/net/netif_receive_skb")
int netif_receive_skb(struct netif_receive_skb_args *args)
{
	struct link_counts *c = counts_for(args, args->name);
	if (!c)
		return 0;
	c->rx_bytes += args->len;
	c->rx_packets++;
	return 0;
}
