//go:build updatecrash

package update

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// With the updatecrash tag, KESTREL_UPDATE_CRASH_AT=STEP:N kills the
// process with SIGKILL right after the Nth time it reaches durable step
// STEP (begin, chunk, progress, verified, pending, link, boot, good,
// reverting, reverted, reported, ...); KESTREL_UPDATE_STEPS names a file
// that gets a line "PID STEP" per step reached.
var (
	crashStep, crashN = parseCrash(os.Getenv("KESTREL_UPDATE_CRASH_AT"))
	stepsFile         = os.Getenv("KESTREL_UPDATE_STEPS")
	stepMu            sync.Mutex
	stepCount         = map[string]int{}
)

func parseCrash(s string) (string, int) {
	name, n, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0
	}
	k, _ := strconv.Atoi(n)
	return name, k
}

func crashPoint(step string) {
	stepMu.Lock()
	stepCount[step]++
	n := stepCount[step]
	stepMu.Unlock()
	if stepsFile != "" {
		if f, err := os.OpenFile(stepsFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			fmt.Fprintf(f, "%d %s\n", os.Getpid(), step)
			f.Close()
		}
	}
	if step == crashStep && n == crashN {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
