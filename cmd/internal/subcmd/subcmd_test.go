package subcmd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// env stands in for a binary's stdio.
type env struct{ out io.Writer }

func testTable() Table[env] {
	return Table[env]{Program: "prog", Commands: map[string]Command[env]{
		"zulu": {Summary: "zulu: last in the list", Run: func(args []string, e env) error {
			fmt.Fprintln(e.out, strings.Join(args, "|"))
			return nil
		}},
		"alpha": {Summary: "alpha: first in the list", Run: func([]string, env) error {
			return fmt.Errorf("%w: alpha takes nothing", ErrUsage)
		}},
		"fail": {Summary: "fail: an ordinary failure", Run: func([]string, env) error {
			return errors.New("disk full")
		}},
		"report": {Summary: "report: prints its own verdict", Run: func(_ []string, e env) error {
			fmt.Fprintln(e.out, "FAIL gps")
			return fmt.Errorf("after the report: %w", ExitStatus(3))
		}},
	}}
}

const wantUsage = `usage: prog COMMAND [ARGS]

commands:
  alpha: first in the list
  fail: an ordinary failure
  report: prints its own verdict
  zulu: last in the list
`

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		out, errs  string
		wantsUsage bool
	}{
		{args: nil, code: 2, wantsUsage: true},
		{args: []string{"help"}, code: 0, wantsUsage: true},
		{args: []string{"-h"}, code: 0, wantsUsage: true},
		{args: []string{"--help", "zulu"}, code: 0, wantsUsage: true},
		{args: []string{"nope"}, code: 2, errs: "prog: unknown command \"nope\"\n", wantsUsage: true},
		{args: []string{"zulu", "-x", "a b"}, code: 0, out: "-x|a b\n"},
		{args: []string{"alpha"}, code: 2, errs: "prog alpha: usage: alpha takes nothing\n"},
		{args: []string{"fail"}, code: 1, errs: "prog fail: disk full\n"},
		{args: []string{"report"}, code: 3, out: "FAIL gps\n"},
	} {
		var out, errs bytes.Buffer
		code := testTable().Dispatch(tc.args, env{out: &out}, &errs)
		want := tc.errs
		if tc.wantsUsage {
			want += wantUsage
		}
		if code != tc.code || out.String() != tc.out || errs.String() != want {
			t.Errorf("Dispatch(%q) = %d, stdout %q, stderr %q; want %d, %q, %q",
				tc.args, code, out.String(), errs.String(), tc.code, tc.out, want)
		}
	}
}

func TestExitStatusReadsAsStatus(t *testing.T) {
	if got := ExitStatus(1).Error(); got != "exit status 1" {
		t.Errorf("ExitStatus(1).Error() = %q", got)
	}
}

func newFlags() (*flag.FlagSet, *bytes.Buffer, *bool) {
	var b bytes.Buffer
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&b)
	v := fs.Bool("v", false, "verbose")
	return fs, &b, v
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flagsOnly bool
		args      []string
		help      bool
		err       string // "" for none; all errors must wrap ErrUsage
		rest      []string
		v         bool
	}{
		{name: "flags and args", args: []string{"-v", "a", "b"}, v: true, rest: []string{"a", "b"}},
		{name: "help", args: []string{"-h"}, help: true},
		{name: "long help", args: []string{"--help", "-v"}, help: true},
		{name: "unknown flag", args: []string{"-bogus"}, err: "usage: flag provided but not defined: -bogus"},
		{name: "flags only", flagsOnly: true, args: []string{"-v"}, v: true, rest: []string{}},
		{name: "flags only, help", flagsOnly: true, args: []string{"-h"}, help: true},
		{name: "flags only, bad flag", flagsOnly: true, args: []string{"-v=maybe"}, err: `usage: invalid boolean value "maybe" for -v: parse error`},
		{name: "flags only, positional", flagsOnly: true, args: []string{"-v", "extra"}, err: `usage: unexpected argument "extra"`},
	} {
		fs, printed, v := newFlags()
		parse := Parse
		if tc.flagsOnly {
			parse = ParseFlagsOnly
		}
		help, err := parse(fs, tc.args)
		if help != tc.help {
			t.Errorf("%s: help = %v, want %v", tc.name, help, tc.help)
		}
		if tc.help && !strings.Contains(printed.String(), "Usage of x") {
			t.Errorf("%s: FlagSet printed %q", tc.name, printed.String())
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err || !errors.Is(err, ErrUsage)):
			t.Errorf("%s: err = %v, want %q wrapping ErrUsage", tc.name, err, tc.err)
		}
		if tc.err == "" && !tc.help && (*v != tc.v || !slices.Equal(fs.Args(), tc.rest)) {
			t.Errorf("%s: -v %v, args %q; want %v, %q", tc.name, *v, fs.Args(), tc.v, tc.rest)
		}
	}
}

func TestFileFirst(t *testing.T) {
	for _, tc := range []struct {
		args, rest []string
		file       string
	}{
		{args: nil, file: "", rest: nil},
		{args: []string{"a.toml", "--set", "x=1"}, file: "a.toml", rest: []string{"--set", "x=1"}},
		{args: []string{"--set", "x=1", "a.toml"}, file: "", rest: []string{"--set", "x=1", "a.toml"}},
		{args: []string{"-"}, file: "", rest: []string{"-"}},
	} {
		file, rest := FileFirst(tc.args)
		if file != tc.file || !slices.Equal(rest, tc.rest) {
			t.Errorf("FileFirst(%q) = %q, %q; want %q, %q", tc.args, file, rest, tc.file, tc.rest)
		}
	}
}
