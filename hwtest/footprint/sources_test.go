package footprint

import (
	"os"
	"strings"
	"testing"
)

// TestClassifyPerfScript: a recorded perf script of sched_switch events is
// counted by source: voluntary switches only, each under what the
// sleeping thread's user stack waits for.
func TestClassifyPerfScript(t *testing.T) {
	b, err := os.ReadFile("testdata/sched_switch.perf")
	if err != nil {
		t.Fatal(err)
	}
	sources, total := classifyPerfScript(b)
	voluntary := strings.Count(string(b), "sched:sched_switch:") - strings.Count(string(b), "prev_state=R ")
	if total != voluntary {
		t.Fatalf("total %d, want the %d voluntary switches", total, voluntary)
	}
	sum := 0
	names := map[string]int{}
	for _, s := range sources {
		sum += s.count
		names[s.name] = s.count
	}
	if sum != total {
		t.Fatalf("sources add up to %d of %d", sum, total)
	}
	for _, want := range []string{"runtime: sysmon", "runtime: epoll wait (I/O readiness or the next timer)"} {
		if names[want] == 0 {
			t.Errorf("no %q in %v", want, sources)
		}
	}
	t.Log("\n" + formatSources(sources, total, 1))
}

// TestCheckGoesRed: the check fails a load phase over the wakeup target or
// past the RSS baseline's margin, and passes one within both.
func TestCheckGoesRed(t *testing.T) {
	ok := result{wakeups: 100, rssMax: 13 << 20, cpu: 0.5}
	if f := check(ok); len(f) != 0 {
		t.Fatalf("check(%+v) = %v", ok, f)
	}
	for _, r := range []result{
		{wakeups: 151, rssMax: 13 << 20, cpu: 0.5},
		{wakeups: 100, rssMax: 15 << 20, cpu: 0.5},
	} {
		if f := check(r); len(f) != 1 {
			t.Errorf("check(wakeups %.0f, RSS %d MiB) = %v, want one failure", r.wakeups, r.rssMax>>20, f)
		}
	}
}
