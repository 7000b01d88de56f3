package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
)

// configValidate checks a partial config (what push would sign) and lists
// every problem, each with its key path, as kestrel run does for a whole
// config file.
func configValidate(args []string, s stdio) error {
	fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	fleet := fs.String("fleet", os.Getenv("KESTREL_FLEET"), "fleet id the config is for (default $KESTREL_FLEET)")
	asJSON := addJSONFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl config validate [--json] FILE\n\n"+
			"Checks FILE as config push would before signing it: strict TOML, known\n"+
			"keys that a remote config may set, valid values. Prints every problem, one\n"+
			"line each naming its key path, and exits 1 if there is any. Offline: no\n"+
			"broker needed.\n\nflags:")
		fs.PrintDefaults()
	}
	file, rest := subcmd.FileFirst(args)
	if help, err := subcmd.Parse(fs, rest); help || err != nil {
		return err
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() != 0 || file == "" {
		return fmt.Errorf("%w: one config FILE is required", errUsage)
	}
	body, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	type problem struct {
		Path  string `json:"path,omitempty"`
		Error string `json:"error"`
	}
	out := struct {
		File   string    `json:"file"`
		Valid  bool      `json:"valid"`
		Errors []problem `json:"errors"`
	}{File: file, Errors: []problem{}}
	for _, fe := range overlayProblems(body, *fleet) {
		msg := fe.Error()
		if fe.Path != "" && fe.Err != nil {
			msg = fe.Err.Error()
		}
		out.Errors = append(out.Errors, problem{Path: fe.Path, Error: msg})
	}
	out.Valid = len(out.Errors) == 0
	if *asJSON {
		if err := writeJSON(s.stdout, out); err != nil {
			return err
		}
	} else if out.Valid {
		fmt.Fprintf(s.stdout, "%s: ok\n", file)
	} else {
		for _, p := range out.Errors {
			if p.Path != "" {
				fmt.Fprintf(s.stdout, "%s: %s: %s\n", file, p.Path, p.Error)
			} else {
				fmt.Fprintf(s.stdout, "%s: %s\n", file, p.Error)
			}
		}
	}
	if !out.Valid {
		return fmt.Errorf("%s: %d problem(s)", file, len(out.Errors))
	}
	return nil
}

// overlayProblems is every problem with body as a remote config: parse
// and remote-settable errors, then the validation of the result laid over
// the defaults.
func overlayProblems(body []byte, fleet string) []*config.FieldError {
	if fleet == "" {
		fleet = "check"
	}
	base := config.Defaults()
	base.Device.ID, base.Device.Fleet = "check", fleet
	c, _, err := config.Overlay(base, body)
	if err != nil {
		return config.FieldErrors(err)
	}
	return config.FieldErrors(c.Validate())
}
