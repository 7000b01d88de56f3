//go:build updatecrash

package update

import (
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// With the updatecrash tag, KESTREL_UPDATE_CRASH_AT=N kills the process
// with SIGKILL at the Nth durable step of the update since it started;
// KESTREL_UPDATE_STEPS names a file that gets one line per step reached.
var (
	crashAt, _ = strconv.Atoi(os.Getenv("KESTREL_UPDATE_CRASH_AT"))
	stepsFile  = os.Getenv("KESTREL_UPDATE_STEPS")
	steps      atomic.Int64
)

func crashPoint(step string) {
	n := steps.Add(1)
	if stepsFile != "" {
		if f, err := os.OpenFile(stepsFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			f.WriteString(step + "\n")
			f.Close()
		}
	}
	if crashAt > 0 && n == int64(crashAt) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
