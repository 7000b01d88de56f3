// Command kestrel is the edge agent daemon for body-worn cameras and patrol
// vehicles. See README.md and docs/operations.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type stdio struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	summary string
	run     func(args []string, s stdio) error
}

var errUsage = errors.New("usage")

var commands map[string]command

func init() {
	commands = map[string]command{
		"version":  {"version: print version, Go version and platform", runVersion},
		"run":      {"run --config FILE [--set key=value]...: the daemon", runRun},
		"demo":     {"demo [--for DURATION]: the whole agent on simulated devices and an in-process broker", runDemo},
		"selftest": {"selftest --config FILE: the fitter's commissioning check", runSelftest},
		"config":   {"config defaults|validate FILE: print or check configuration", runConfig},
		"hook":     {"hook send TYPE [key=value]...: post a firmware event to the agent", runHook},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], stdio{ctx: context.Background(), stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

func dispatch(args []string, s stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(s.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(s.stderr, "kestrel: unknown command %q\n", args[0])
		usage(s.stderr)
		return 2
	}
	if err := c.run(args[1:], s); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			return int(ec)
		}
		fmt.Fprintf(s.stderr, "kestrel %s: %v\n", args[0], err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// exitCode lets a command choose its exit status after printing its own
// report (selftest).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kestrel COMMAND [ARGS]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", commands[n].summary)
	}
}

func runVersion(args []string, s stdio) error {
	v := version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	fmt.Fprintf(s.stdout, "kestrel %s %s %s/%s\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
