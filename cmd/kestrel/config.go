package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
)

const configUsage = `usage:
  kestrel config defaults                        print a complete commented config file
  kestrel config validate FILE [--set key=value]...
                                                 check FILE strictly; every error names its key path
  kestrel config show [--config FILE] [--set key=value]...
                                                 print the effective config (file, then overrides)
  kestrel config keys                            list every key path, marking [restart] and [local] keys

See docs/config.md.`

func runConfig(args []string, s stdio) error {
	if len(args) == 0 {
		fmt.Fprintln(s.stderr, configUsage)
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(s.stdout, configUsage)
		return nil
	case "defaults":
		if len(args) > 1 {
			return fmt.Errorf("%w: config defaults takes no arguments", errUsage)
		}
		_, err := s.stdout.Write(config.DefaultsTOML())
		return err
	case "validate":
		return configValidate(args[1:], s)
	case "show":
		return configShow(args[1:], s)
	case "keys":
		for _, p := range config.Paths() {
			var marks []string
			if !config.LiveChangeable(p) {
				marks = append(marks, "[restart]")
			}
			if !config.RemoteSettable(p) && p != "version" {
				marks = append(marks, "[local]")
			}
			fmt.Fprintf(s.stdout, "%s %s\n", p, strings.Join(marks, " "))
		}
		return nil
	}
	fmt.Fprintln(s.stderr, configUsage)
	return fmt.Errorf("%w: unknown config subcommand %q", errUsage, args[0])
}

func configValidate(args []string, s stdio) error {
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var sets setFlags
	fs.Var(&sets, "set", "override a config key before validating, e.g. --set device.id=cam-1 (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel config validate FILE [--set key=value]...\n\n"+
			"Parses FILE strictly (unknown keys and bad values are errors), applies the\n"+
			"overrides and validates. Prints one line per problem, each naming its key\n"+
			"path, and exits 1 if there is any.")
		fs.PrintDefaults()
	}
	file, rest := subcmd.FileFirst(args)
	if help, err := subcmd.Parse(fs, rest); help || err != nil {
		return err
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: one FILE expected", errUsage)
	}
	if file == "" {
		fs.Usage()
		return fmt.Errorf("%w: FILE is required", errUsage)
	}
	if _, err := config.Load(file, sets); err != nil {
		for _, fe := range config.FieldErrors(err) {
			fmt.Fprintf(s.stdout, "%s: %v\n", file, fe)
		}
		return fmt.Errorf("%s is not valid", file)
	}
	fmt.Fprintf(s.stdout, "%s: ok\n", file)
	return nil
}

func configShow(args []string, s stdio) error {
	fs := flag.NewFlagSet("config show", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	path := fs.String("config", "", "config file (default: built-in defaults only)")
	var sets setFlags
	fs.Var(&sets, "set", "override a config key, e.g. --set gps.baud=9600 (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel config show [--config FILE] [--set key=value]...\n\n"+
			"Prints the effective configuration as TOML after strict parsing, overrides\n"+
			"and validation.")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	c, err := config.Load(*path, sets)
	if err != nil {
		return err
	}
	return toml.NewEncoder(s.stdout).Encode(c)
}
