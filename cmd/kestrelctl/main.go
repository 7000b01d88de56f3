// Command kestrelctl is the fleet manager's and platform's tool: it decodes
// NMEA and wire payloads, tails live telemetry, and signs and pushes
// configuration and commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
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

var commands = subcmd.Table[stdio]{Program: "kestrelctl", Commands: map[string]subcmd.Command[stdio]{
	"nmea":    {Summary: "nmea decode [FILE|-]: NMEA 0183 to one JSON fix per receiver cycle", Run: runNMEA},
	"decode":  {Summary: "decode [--hex] [FILE|-]: wire payloads to JSON lines", Run: runDecode},
	"wire":    {Summary: "wire encode [--batch N] [--jsonl] [FILE|-]: fixes to telemetry payloads", Run: runWire},
	"tail":    {Summary: "tail [--broker URL] [--fleet F] [--device D] [--gaps]: live decoded telemetry", Run: runTail},
	"keygen":  {Summary: "keygen [--out PREFIX]: make an Ed25519 fleet signing key", Run: runKeygen},
	"config":  {Summary: "config validate|push|clear|rollback|get ...: signed remote configuration, dry runs, staged rollouts", Run: runConfig},
	"status":  {Summary: "status [--broker URL] [--fleet F] [--json]: fleet table from retained state", Run: runStatus},
	"cmd":     {Summary: "cmd [--broker URL] [--fleet F] --device D NAME [ARGS]: signed command", Run: runCmd},
	"release": {Summary: "release sign --version V --seq N --binary FILE ...: signed OTA release manifest (and delta)", Run: runRelease},
	"update":  {Summary: "update push|status|clear ...: roll a signed release out over MQTT, staged; where each device is", Run: runUpdate},
}}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(os.Args[1:], stdio{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

func dispatch(args []string, s stdio) int { return commands.Dispatch(args, s, s.stderr) }

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
