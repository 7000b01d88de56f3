package footprint

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Wakeups by source. A voluntary context switch is a thread going to sleep
// (prev_state S or D in the kernel's sched:sched_switch tracepoint); the
// thread's user stack at that moment says what it waits for. perf records
// the tracepoint with frame-pointer call chains (Go keeps frame pointers on
// amd64 and arm64), and classify names the waiter.

// source is one line of the breakdown.
type source struct {
	name  string
	count int
}

// classifyPerfScript reads `perf script` output of sched:sched_switch
// events and counts the voluntary switches (the thread slept) by source.
// Involuntary ones (prev_state R: preempted) are the machine's load and are
// left out, as the wakeups figure leaves them out.
func classifyPerfScript(out []byte) (sources []source, total int) {
	counts := map[string]int{}
	var frames []string
	voluntary := false
	flush := func() {
		if voluntary {
			counts[classify(frames)]++
			total++
		}
		frames, voluntary = frames[:0], false
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.TrimSpace(l) == "":
			flush()
		case strings.Contains(l, "sched:sched_switch:"):
			flush()
			st := field(l, "prev_state=")
			voluntary = st != "" && !strings.HasPrefix(st, "R")
		default:
			// "\t  4a1b2c runtime.futex+0x23 (/path/kestrel)"
			f := strings.Fields(l)
			if len(f) < 3 || strings.Contains(f[len(f)-1], "kernel.kallsyms") {
				continue
			}
			sym := f[1]
			if i := strings.LastIndex(sym, "+0x"); i > 0 {
				sym = sym[:i]
			}
			frames = append(frames, sym)
		}
	}
	flush()
	for k, n := range counts {
		sources = append(sources, source{k, n})
	}
	sort.Slice(sources, func(i, j int) bool {
		if sources[i].count != sources[j].count {
			return sources[i].count > sources[j].count
		}
		return sources[i].name < sources[j].name
	})
	return sources, total
}

func field(l, key string) string {
	i := strings.Index(l, key)
	if i < 0 {
		return ""
	}
	f := strings.Fields(l[i+len(key):])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// classify names what a sleeping thread waits for from its user stack,
// leaf first.
func classify(frames []string) string {
	has := func(s string) bool {
		for _, f := range frames {
			if f == s {
				return true
			}
		}
		return false
	}
	switch {
	case len(frames) == 0:
		return "(no user stack)"
	case has("runtime.sysmon"):
		return "runtime: sysmon"
	case has("runtime.netpoll"):
		// An idle thread waits in epoll for I/O or the next timer.
		return "runtime: epoll wait (I/O readiness or the next timer)"
	case has("runtime.gcBgMarkWorker") || has("runtime.bgsweep") || has("runtime.bgscavenge") || has("runtime.gcStart"):
		return "runtime: GC"
	case has("runtime.stopm"):
		// A thread with nothing to run parks; which path sent it there.
		for _, f := range frames {
			switch f {
			case "runtime.exitsyscall0", "runtime.exitsyscall":
				return "runtime: thread parked after a syscall (P taken)"
			case "runtime.startlockedm", "runtime.stoplockedm":
				return "runtime: locked thread hand-off"
			case "runtime.findRunnable", "runtime.findrunnable":
				return "runtime: thread parked, no work (spinning M)"
			}
		}
		return "runtime: thread parked"
	}
	// A goroutine blocked in a system call: name the first frame outside
	// the runtime and the syscall packages.
	for _, f := range frames {
		if isPlumbing(f) {
			continue
		}
		return "blocking syscall in " + f
	}
	return "runtime: " + frames[0]
}

func isPlumbing(f string) bool {
	for _, p := range []string{"runtime.", "runtime/", "syscall.", "internal/", "golang.org/x/sys/unix.", "os.", "[unknown]"} {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// formatSources renders the breakdown scaled to a rate.
func formatSources(sources []source, total int, seconds float64) string {
	var b strings.Builder
	for _, s := range sources {
		if float64(s.count)/seconds < 0.5 && len(sources) > 12 {
			continue
		}
		fmt.Fprintf(&b, "%8.1f/s  %s\n", float64(s.count)/seconds, s.name)
	}
	fmt.Fprintf(&b, "%8.1f/s  total (perf sched_switch, voluntary)\n", float64(total)/seconds)
	return b.String()
}

// memoryBreakdown splits the agent's resident memory by what it is: the
// binary's code, its read-only data (type data, pclntab: what the runtime
// reads), its data and bss, the Go heap (arenas of 64 MiB reserved
// address space on 64-bit Linux), and the rest (thread stacks, the
// runtime's off-heap structures).
func memoryBreakdown(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	kb := map[string]int64{}
	var order []string
	add := func(k string, v int64) {
		if _, ok := kb[k]; !ok {
			order = append(order, k)
		}
		kb[k] += v
	}
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4 {
			perms, path := f[1], ""
			if len(f) >= 6 {
				path = f[5]
			}
			lo, hi, _ := strings.Cut(f[0], "-")
			size, _ := strconv.ParseUint(hi, 16, 64)
			start, _ := strconv.ParseUint(lo, 16, 64)
			size -= start
			switch {
			case path == exe && strings.Contains(perms, "x"):
				cur = "binary: code (file)"
			case path == exe && strings.HasPrefix(perms, "r--"):
				cur = "binary: read-only data (file)"
			case path == exe:
				cur = "binary: data (file, copied on write)"
			case path == "" && perms == "rw-p" && size >= 4<<20 && start > 0x100000000:
				cur = "anonymous: Go heap arenas and large runtime mappings"
			case path == "" && perms == "rw-p" && start < 0x100000000:
				cur = "anonymous: bss and early heap beside the binary"
			case strings.HasPrefix(path, "["):
				cur = "kernel: " + path
			default:
				cur = "anonymous: other (thread stacks, runtime structures)"
			}
			continue
		}
		if len(f) >= 2 && f[0] == "Rss:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			add(cur, v)
		}
	}
	var out strings.Builder
	var total int64
	for _, k := range order {
		total += kb[k]
		fmt.Fprintf(&out, "%8d kB  %s\n", kb[k], k)
	}
	fmt.Fprintf(&out, "%8d kB  total Rss\n", total)
	return out.String()
}
