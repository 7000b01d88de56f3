// Command kestrel is the edge agent daemon for body-worn cameras and patrol
// vehicles. See README.md and docs/operations.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
)

// version and commit are set at build time with -ldflags "-X
// main.version=... -X main.commit=..." (make dist, make package).
var (
	version = "dev"
	commit  = ""
)

// stdio is where a subcommand reads and writes, so tests can run
// subcommands in-process.
type stdio struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// errUsage marks a command-line mistake: exit status 2.
var errUsage = subcmd.ErrUsage

var commands = subcmd.Table[stdio]{Program: "kestrel", Commands: map[string]subcmd.Command[stdio]{
	"version":  {Summary: "version: print version, Go version and platform", Run: runVersion},
	"run":      {Summary: "run --config FILE [--set key=value]...: the daemon", Run: runRun},
	"demo":     {Summary: "demo [--for DURATION]: the whole agent on simulated devices and an in-process broker", Run: runDemo},
	"selftest": {Summary: "selftest --config FILE: the fitter's commissioning check", Run: runSelftest},
	"config":   {Summary: "config defaults|validate FILE: print or check configuration", Run: runConfig},
	"hook":     {Summary: "hook send TYPE [key=value]...: post a firmware event to the agent", Run: runHook},
	"status":   {Summary: "status [--watch] [--json]: the running agent's live state, over its local control socket", Run: runStatus},
}}

func main() {
	os.Exit(dispatch(os.Args[1:], stdio{ctx: context.Background(), stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

func dispatch(args []string, s stdio) int { return commands.Dispatch(args, s, s.stderr) }

func runVersion(args []string, s stdio) error {
	if help, err := subcmd.NoFlags("version", "kestrel version\n\nPrints the agent's version, commit, Go version and platform.", args, s.stderr); help || err != nil {
		return err
	}
	v := version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	fmt.Fprintf(s.stdout, "kestrel %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if commit != "" {
		fmt.Fprintf(s.stdout, " commit %s", commit)
	}
	fmt.Fprintln(s.stdout)
	return nil
}
