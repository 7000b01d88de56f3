package main

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/firmware-hooks/eventsock"
)

// runHook is the firmware's side of the event socket: shell scripts in the
// camera firmware call `kestrel hook send emergency name=button`.
func runHook(args []string, s stdio) error {
	if len(args) == 0 {
		hookUsage(s)
		return fmt.Errorf("%w: missing subcommand (want send)", errUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		hookUsage(s)
		return nil
	case "send":
		return runHookSend(args[1:], s)
	}
	hookUsage(s)
	return fmt.Errorf("%w: unknown hook subcommand %q", errUsage, args[0])
}

func hookUsage(s stdio) {
	types := make([]string, 0, len(eventsock.Types))
	for t := range eventsock.Types {
		types = append(types, t)
	}
	sort.Strings(types)
	fmt.Fprintf(s.stderr, `usage: kestrel hook send [--socket PATH] TYPE [key=value]...

Posts one firmware event to the running agent over its event socket and
waits for the answer. Exits 0 when the agent accepted the event, 1 with the
agent's reason when it refused (permission, rate limit, bad event) or is not
running, 2 on a usage mistake.

TYPE is one of: %s.
Keys: name (a label, <= 64 bytes), value (integer), text (<= 512 bytes),
time (milliseconds since the epoch, UTC; default: when the agent receives it).

examples:
  kestrel hook send emergency name=button
  kestrel hook send battery_critical value=4 text="cell 2 below 3.3 V"
  kestrel hook send recording_start time=$(date +%%s%%3N)

See docs/hooks.md for the socket protocol.
`, strings.Join(types, ", "))
}

func runHookSend(args []string, s stdio) error {
	fs := flag.NewFlagSet("kestrel hook send", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	socket := fs.String("socket", eventsock.DefaultPath, "the agent's event socket (config hooks.socket)")
	fs.Usage = func() {
		hookUsage(s)
		fmt.Fprintln(s.stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: missing event TYPE (see kestrel hook -h)", errUsage)
	}
	typ := fs.Arg(0)
	if _, ok := eventsock.Types[typ]; !ok {
		return fmt.Errorf("%w: unknown event type %q (see kestrel hook -h)", errUsage, typ)
	}
	kv := make(map[string]string)
	for _, a := range fs.Args()[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("%w: %q is not key=value", errUsage, a)
		}
		if _, dup := kv[k]; dup {
			return fmt.Errorf("%w: key %q given twice", errUsage, k)
		}
		kv[k] = v
	}
	if _, err := eventsock.FormatLine(typ, kv); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if _, err := eventsock.Send(*socket, typ, kv); err != nil {
		return err
	}
	return nil
}
