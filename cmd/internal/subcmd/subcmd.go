// Package subcmd is a program's table of subcommands and their dispatch,
// with the exit-status rules both Kestrel binaries promise
// (docs/operations.md): 0 success, 1 failure, 2 a command-line mistake.
//
// The table is generic over the binary's own stdio type, so subcommands
// and their tests keep the signature func(args []string, s stdio) error.
package subcmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrUsage marks a command-line mistake: wrap it and the exit status is 2.
var ErrUsage = errors.New("usage")

// ExitStatus lets a command choose its exit status after printing its own
// report (kestrel selftest): Dispatch returns it and prints nothing.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Command is one subcommand.
type Command[S any] struct {
	// Summary is its line in the usage list, which is sorted by name.
	Summary string
	Run     func(args []string, s S) error
}

// Table is a program's subcommands by name.
type Table[S any] struct {
	Program  string // in the usage line and before every error message
	Commands map[string]Command[S]
}

// Dispatch runs the command args[0] names and returns the exit status.
// Usage and errors go to stderr; the command's output is its own business.
func (t Table[S]) Dispatch(args []string, s S, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		t.Usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := t.Commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n", t.Program, args[0])
		t.Usage(stderr)
		return 2
	}
	if err := c.Run(args[1:], s); err != nil {
		var es ExitStatus
		if errors.As(err, &es) {
			return int(es)
		}
		fmt.Fprintf(stderr, "%s %s: %v\n", t.Program, args[0], err)
		if errors.Is(err, ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// Usage writes the usage line and the commands' summaries, by name.
func (t Table[S]) Usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s COMMAND [ARGS]\n\ncommands:\n", t.Program)
	names := make([]string, 0, len(t.Commands))
	for n := range t.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", t.Commands[n].Summary)
	}
}

// Parse parses a subcommand's flags. help is true after -h or --help,
// which is not an error: the FlagSet has printed its usage. Any other
// parse error wraps ErrUsage. Use fs with flag.ContinueOnError.
func Parse(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return false, nil
}

// ParseFlagsOnly is Parse for a subcommand that takes no positional
// arguments: one is a usage error.
func ParseFlagsOnly(fs *flag.FlagSet, args []string) (help bool, err error) {
	if help, err := Parse(fs, args); help || err != nil {
		return help, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	return false, nil
}

// FileFirst lets a FILE argument come before the flags, since the flag
// package stops at the first non-flag argument: it splits off args[0]
// unless that looks like a flag, and returns "" and args otherwise.
func FileFirst(args []string) (file string, rest []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

// NoFlags parses the arguments of a subcommand that takes none (version):
// -h prints usage (help is true), anything else is a usage error.
func NoFlags(name, usage string, args []string, stderr io.Writer) (help bool, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "usage: %s\n", usage) }
	return ParseFlagsOnly(fs, args)
}
