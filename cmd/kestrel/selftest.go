package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/selftest"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
)

// runSelftest is the fitter's commissioning check: it tries every part the
// config names and prints PASS/WARN/FAIL with a hint for each. Exit 0 when
// nothing failed, 1 when something did, 2 for command-line mistakes.
func runSelftest(args []string, s stdio) error {
	fset := flag.NewFlagSet("kestrel selftest", flag.ContinueOnError)
	fset.SetOutput(s.stderr)
	path := fset.String("config", "", "configuration file (TOML), the same one kestrel run uses")
	asJSON := fset.Bool("json", false, "print the report as JSON instead of a table")
	var sets setFlags
	fset.Var(&sets, "set", "override a config key, e.g. --set gps.baud=9600 (repeatable)")
	fset.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel selftest --config FILE [--set key=value]... [--json]\n\n"+
			"Checks each configured part as the agent will use it and prints PART, RESULT\n"+
			"(PASS, WARN, FAIL or SKIP), DETAIL and a HINT for the fitter:\n"+
			"  gps      the port opens, NMEA flows with valid checksums (baud detected if\n"+
			"           gps.baud = 0), and the fix state\n"+
			"  radio    it answers AT; registration and signal (read only, nothing is set)\n"+
			"  accel, battery, thermal, gpio   the sensors can be read\n"+
			"  broker   DNS, TCP, TLS and MQTT login with the configured credentials\n"+
			"  clock    the year, and the offset from GPS time when there is a fix\n"+
			"  spool    the directory can be created and written, and has room\n"+
			"  ebpf     the hooks load (a refusal is a warning: the agent runs without)\n"+
			"Beside a running agent, the ports it holds are not opened (opening a tty\n"+
			"resets its line settings): their rows come from the agent's status, over its\n"+
			"local control socket (status.socket), and a port whose lock file another\n"+
			"process holds is skipped.\n"+
			"Exit status: 0 no failure, 1 a part failed, 2 usage error.\n\nflags:")
		fset.PrintDefaults()
	}
	if help, err := subcmd.Parse(fset, args); help || err != nil {
		return err
	}
	if fset.NArg() > 0 {
		fset.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fset.Arg(0))
	}
	if *path == "" {
		fset.Usage()
		return fmt.Errorf("%w: --config FILE is required", errUsage)
	}
	if _, err := os.Stat(*path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: config file %s does not exist (`kestrel config defaults > FILE` writes a template)", errUsage, *path)
		}
		return fmt.Errorf("%w: config file: %v", errUsage, err)
	}

	cfg, cfgErr := config.Load(*path, sets)
	if cfgErr != nil {
		// A config that parses but does not validate is still worth
		// checking part by part: the fitter fixes everything in one go.
		c, err := parseUnvalidated(*path, sets)
		if err != nil {
			return cfgErr
		}
		cfg = c
	}

	var opts selftest.Options
	if cfg.Status.Socket != "" {
		ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
		st, err := localctl.Query(ctx, cfg.Status.Socket)
		cancel()
		if err == nil {
			opts.Agent = &st
			for _, p := range st.Parts {
				if strings.HasPrefix(p.State, "started") && (p.Name == "gps" || p.Name == "radio") {
					opts.InUse = append(opts.InUse, p.Name)
				}
			}
		}
	}
	rep := selftest.Run(s.ctx, cfg, opts)
	if cfgErr != nil {
		var msgs []string
		for _, fe := range config.FieldErrors(cfgErr) {
			msgs = append(msgs, fe.Error())
		}
		row := selftest.Result{Part: "config", Status: selftest.Fail, Detail: strings.Join(msgs, "; "),
			Hint: "fix the keys named; `kestrel config validate " + *path + "` lists them"}
		rep.Results = append([]selftest.Result{row}, rep.Results...)
		rep.Status = selftest.Fail
	}

	if *asJSON {
		enc := json.NewEncoder(s.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteTable(s.stdout); err != nil {
		return err
	}
	if rep.Failed() {
		return subcmd.ExitStatus(1)
	}
	return nil
}

// parseUnvalidated reads the config and applies the overrides without
// validating.
func parseUnvalidated(path string, sets []string) (config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Config{}, err
	}
	if len(data) > config.MaxFileSize {
		return config.Config{}, config.ErrTooLarge
	}
	c, err := config.Parse(data)
	if err != nil {
		return config.Config{}, err
	}
	for _, kv := range sets {
		if err := config.ApplySet(&c, kv); err != nil {
			return config.Config{}, err
		}
	}
	return c, nil
}
