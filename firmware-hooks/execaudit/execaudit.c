//go:build ignore

// Exec audit: one ring-buffer record per successful execve, from the
// sched:sched_process_exec tracepoint.
//
// No vmlinux.h: the tracepoint context is copied from
// /sys/kernel/tracing/events/sched/sched_process_exec/format, and the two
// task_struct fields we need (the parent's tgid and comm) are read with
// CO-RE through a minimal struct marked preserve_access_index, so the loader
// relocates the offsets against the running kernel's BTF.

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
#include <bpf/bpf_core_read.h>

// Values from include/uapi/linux/bpf.h.
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_RINGBUF 27

#define TASK_COMM_LEN 16
#define PATH_LEN 512

char __license[] SEC("license") = "Dual MIT/GPL";

struct task_struct {
	int tgid;
	char comm[TASK_COMM_LEN];
	struct task_struct *real_parent;
} __attribute__((preserve_access_index));

struct exec_event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 path_len; // bytes copied including the NUL; PATH_LEN means truncated
	char comm[TASK_COMM_LEN];
	char parent_comm[TASK_COMM_LEN];
	char path[PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__type(value, struct exec_event); // for bpf2go -type; the loader drops it
} exec_events SEC(".maps");

// Execs that found the ring buffer full: an audit gap user space reports.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_lost SEC(".maps");

// /sys/kernel/tracing/events/sched/sched_process_exec/format
struct sched_process_exec_args {
	__u64 common;
	__u32 filename; // __data_loc char[]: offset in the low 16 bits
	__s32 pid;
	__s32 old_pid;
};

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(struct sched_process_exec_args *args)
{
	struct exec_event *e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&exec_lost, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);

	e->pid = args->pid;
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	BPF_CORE_READ_STR_INTO(&e->parent_comm, parent, comm);
	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path),
					   (char *)args + (args->filename & 0xffff));
	e->path_len = n < 0 ? 0 : (__u32)n;

	bpf_ringbuf_submit(e, 0);
	return 0;
}
