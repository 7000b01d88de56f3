package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

func init() {
	commands.Commands["audit"] = subcmd.Command[stdio]{Summary: "audit --db URL [--device D] [--verify] [--json]: the devices' audit chains and the consultation log, listed or verified", Run: runAudit}
}

// errChainBroken: --verify found a fault (exit status 1).
var errChainBroken = subcmd.ExitStatus(1)

func runAudit(args []string, s stdio) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "database: postgres://... or sqlite:FILE (required)")
	fleetID := fs.String("fleet", "", "fleet (default: every fleet)")
	device := fs.String("device", "", "device (default: every device)")
	verify := fs.Bool("verify", false, "verify the chains instead of listing them; exit status 1 if any fault")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	op := addOperatorFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl audit --db URL [--fleet F] [--device D] [--verify] [--json]\n\n"+
			"Lists the devices' audit entries (config changes key by key, commands,\n"+
			"privacy changes, rollbacks) as the platform stored them, with what the\n"+
			"chain check on insert found, and the consultation log (who read what from\n"+
			"the database). --verify checks both chains from the stored evidence and\n"+
			"names each fault by seq: altered, missing (deleted or never arrived), out\n"+
			"of order, reused seq, broken link, bad signature (docs/audit.md).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	st, err := openPlatformDB(s, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	cmdName := "audit"
	if *verify {
		cmdName = "audit --verify"
	}
	k, err := startConsultation(s, st, op, Consultation{Command: cmdName, Fleet: *fleetID, Device: *device})
	if err != nil {
		return err
	}
	q := platform.AuditQuery{Fleet: *fleetID, Device: *device}
	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	if *verify {
		reps, err := st.VerifyAudit(s.ctx, q)
		var cons []fleet.AuditProblem
		var nCons int
		if err == nil {
			cons, err = st.VerifyConsultations(s.ctx)
		}
		if err == nil {
			var cs []platform.Consultation
			cs, err = st.Consultations(s.ctx, "")
			nCons = len(cs)
		}
		faults := len(cons)
		for _, r := range reps {
			faults += len(r.Problems)
		}
		if err := k.finish(err, fmt.Sprintf("%d device chains and the consultation log verified, %d faults", len(reps), faults)); err != nil {
			return err
		}
		if err := printVerify(out, *asJSON, reps, cons, nCons); err != nil {
			return err
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if faults > 0 {
			fmt.Fprintf(s.stderr, "kestrelctl audit: %d faults\n", faults)
			return errChainBroken
		}
		return nil
	}
	rows, err := st.AuditEntries(s.ctx, q)
	var cs []platform.Consultation
	if err == nil {
		cs, err = st.Consultations(s.ctx, *device)
	}
	if err := k.finish(err, fmt.Sprintf("%d audit entries, %d consultations", len(rows), len(cs))); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, r := range rows {
			if err := enc.Encode(struct {
				Chain string `json:"chain"`
				platform.AuditRow
			}{"device", r}); err != nil {
				return err
			}
		}
		for _, c := range cs {
			if err := enc.Encode(struct {
				Chain string `json:"chain"`
				platform.Consultation
			}{"consultation", c}); err != nil {
				return err
			}
		}
		return out.Flush()
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FLEET\tDEVICE\tSEQ\tTIME\tKIND\tRESULT\tBY\tWHAT\tSIGNATURE\tON INSERT")
	for _, r := range rows {
		what := ""
		if r.Entry != nil {
			what = auditWhat(r.Entry)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Fleet, r.Device, r.Seq, r.Time.UTC().Format(time.RFC3339), r.Kind, r.Result,
			dash(strings.Join(r.By, ",")), dash(what), r.Verdict, dash(r.Problems))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CONSULTATION\tTIME\tOPERATOR\tKEY\tCOMMAND\tFLEET\tDEVICE\tRANGE\tOUTCOME")
	for _, c := range cs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Seq, time.UnixMilli(c.Time).UTC().Format(time.RFC3339), c.Operator, dash(c.KeyID),
			c.Command, dash(c.Fleet), dash(c.Device), consultRange(c), c.Outcome)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return out.Flush()
}

// auditWhat is an entry's what, in short: the diff, or the command and its
// arguments.
func auditWhat(e *fleet.AuditEntry) string {
	var parts []string
	if e.Name != "" {
		parts = append(parts, e.Name)
	}
	for k, v := range e.Args {
		parts = append(parts, k+"="+v)
	}
	for _, d := range e.Diff {
		parts = append(parts, d.Path+": "+d.Old+" -> "+d.New)
	}
	if e.Error != "" {
		parts = append(parts, "("+e.Error+")")
	}
	return strings.Join(parts, " ")
}

func consultRange(c platform.Consultation) string {
	if c.From == 0 && c.To == 0 {
		return "-"
	}
	f := func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format(time.RFC3339)
	}
	return f(c.From) + ".." + f(c.To)
}

func printVerify(out *bufio.Writer, asJSON bool, reps []platform.ChainReport, cons []fleet.AuditProblem, nCons int) error {
	if asJSON {
		enc := json.NewEncoder(out)
		for _, r := range reps {
			if err := enc.Encode(struct {
				Chain string `json:"chain"`
				platform.ChainReport
				Verified bool `json:"verified"`
			}{"device", r, len(r.Problems) == 0}); err != nil {
				return err
			}
		}
		return enc.Encode(map[string]any{"chain": "consultation", "entries": nCons, "problems": cons, "verified": len(cons) == 0})
	}
	for _, r := range reps {
		verdict := "verified"
		if len(r.Problems) > 0 {
			verdict = fmt.Sprintf("%d faults", len(r.Problems))
		}
		fmt.Fprintf(out, "device %s/%s: %d entries, head seq %d: %s\n", r.Fleet, r.Device, r.Entries, r.HeadSeq, verdict)
		for _, p := range r.Problems {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	verdict := "verified"
	if len(cons) > 0 {
		verdict = fmt.Sprintf("%d faults", len(cons))
	}
	fmt.Fprintf(out, "consultations: %d rows: %s\n", nCons, verdict)
	for _, p := range cons {
		fmt.Fprintf(out, "  %s\n", p)
	}
	return nil
}
