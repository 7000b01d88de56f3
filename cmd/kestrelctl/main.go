// Command kestrelctl is the fleet manager's and platform's tool: it decodes
// NMEA and wire payloads, tails live telemetry, and signs and pushes
// configuration and commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// stdio is where a subcommand reads and writes, so tests can run
// subcommands in-process.
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

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

var commands = map[string]command{
	"nmea":   {"nmea decode [FILE|-]: NMEA 0183 to one JSON fix per receiver cycle", runNMEA},
	"decode": {"decode [--hex] [FILE|-]: wire payloads to JSON lines", runDecode},
	"wire":   {"wire encode [--batch N] [--jsonl] [FILE|-]: fixes to telemetry payloads", runWire},
	"tail":   {"tail --broker URL [--fleet F] [--device D] [--gaps]: live decoded telemetry", runTail},
	"keygen": {"keygen [--out PREFIX]: make an Ed25519 fleet signing key", runKeygen},
	"config": {"config push|get ...: signed remote configuration", runConfig},
	"status": {"status --broker URL --fleet F: fleet table from retained state", runStatus},
	"cmd":    {"cmd --broker URL --fleet F --device D NAME [ARGS]: signed command", runCmd},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(os.Args[1:], stdio{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
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
		fmt.Fprintf(s.stderr, "kestrelctl: unknown command %q\n", args[0])
		usage(s.stderr)
		return 2
	}
	if err := c.run(args[1:], s); err != nil {
		fmt.Fprintf(s.stderr, "kestrelctl %s: %v\n", args[0], err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kestrelctl COMMAND [ARGS]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", commands[n].summary)
	}
}

// openInput opens FILE, or standard input for "-" or no argument.
func openInput(args []string, s stdio) (io.ReadCloser, error) {
	if len(args) == 0 || args[0] == "-" {
		return io.NopCloser(s.stdin), nil
	}
	if len(args) > 1 {
		return nil, fmt.Errorf("%w: one input file at most, got %d", errUsage, len(args))
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	return f, nil
}
