package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/platform"
)

// The platform's read side: what "kestrel-platform serve" stored. The
// commands join the table here, so this file is the whole of the change.
func init() {
	commands.Commands["track"] = subcmd.Command[stdio]{Summary: "track --db URL --device D [--from T] [--to T] [--format jsonl|geojson|gpx|csv]: stored positions", Run: runTrack}
	commands.Commands["gaps"] = subcmd.Command[stdio]{Summary: "gaps --db URL [--fleet F]: missing sequence ranges the platform keeps", Run: runGaps}
	commands.Commands["devices"] = subcmd.Command[stdio]{Summary: "devices --db URL [--json]: devices the platform has heard from", Run: runDevices}
}

func openPlatformDB(s stdio, url string) (*platform.Store, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: --db is required (postgres://... or sqlite:FILE)", errUsage)
	}
	// A read never creates a database: a mistyped file name is an error.
	if file, ok := strings.CutPrefix(url, "sqlite:"); ok {
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("--db %s: %w", url, err)
		}
	}
	return platform.Open(s.ctx, url)
}

func runTrack(args []string, s stdio) error {
	fs := flag.NewFlagSet("track", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "database: postgres://... or sqlite:FILE (required)")
	device := fs.String("device", "", "device id (required)")
	fleet := fs.String("fleet", "", "fleet (default: any)")
	from := fs.String("from", "", "first time, RFC 3339 or a duration before now (2h)")
	to := fs.String("to", "", "end time (exclusive), RFC 3339 or a duration before now")
	format := fs.String("format", "jsonl", "jsonl, geojson, gpx or csv")
	limit := fs.Int("limit", 0, "at most N points (0: all)")
	evidenceOut := fs.String("evidence", "", "also write the evidence bundle of the range to FILE, for \"kestrelctl verify FILE\" (docs/evidence.md)")
	op := addOperatorFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl track --db URL --device D [--from T] [--to T] [--format jsonl|geojson|gpx|csv]\n\n"+
			"Prints one device's stored positions in time order. jsonl is the format of\n\"kestrelctl decode\".\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if *device == "" {
		return fmt.Errorf("%w: --device is required", errUsage)
	}
	if !slices.Contains(platform.TrackFormats, *format) {
		return fmt.Errorf("%w: --format %q: want jsonl, geojson, gpx or csv", errUsage, *format)
	}
	if *limit < 0 {
		return fmt.Errorf("%w: --limit must not be negative", errUsage)
	}
	q := platform.TrackQuery{Fleet: *fleet, Device: *device, Limit: *limit}
	now := time.Now()
	var err error
	if q.From, err = platform.ParseTime(*from, now); err != nil {
		return fmt.Errorf("%w: --from: %v", errUsage, err)
	}
	if q.To, err = platform.ParseTime(*to, now); err != nil {
		return fmt.Errorf("%w: --to: %v", errUsage, err)
	}
	st, err := openPlatformDB(s, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	tw, err := platform.NewTrackWriter(s.stdout, *format, *device)
	if err != nil {
		return err
	}
	rf, rt := timeRange(q.From, q.To)
	k, err := startConsultation(s, st, op, Consultation{Command: "track", Fleet: *fleet, Device: *device, From: rf, To: rt,
		Detail: fmt.Sprintf("format %s, limit %d", *format, *limit)})
	if err != nil {
		return err
	}
	if err := st.Track(s.ctx, q, tw.Write); err != nil {
		tw.Close()
		return k.finish(err, "")
	}
	if err := tw.Close(); err != nil {
		return k.finish(fmt.Errorf("write output: %w", err), "")
	}
	done := fmt.Sprintf("%d positions", tw.Points())
	if *evidenceOut != "" {
		// A disclosure: the bundle's writing is part of the logged read.
		if err := trackEvidence(s, st, q, *evidenceOut); err != nil {
			return k.finish(err, done)
		}
		done += ", evidence bundle " + *evidenceOut
	}
	if err := k.finish(nil, done); err != nil {
		return err
	}
	if tw.Points() == 0 {
		fmt.Fprintf(s.stderr, "kestrelctl track: no positions for device %q in that range\n", *device)
	}
	return nil
}

func runGaps(args []string, s stdio) error {
	fs := flag.NewFlagSet("gaps", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "database: postgres://... or sqlite:FILE (required)")
	fleet := fs.String("fleet", "", "fleet (default: every fleet)")
	device := fs.String("device", "", "device (default: every device)")
	all := fs.Bool("all", false, "closed gaps too")
	op := addOperatorFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl gaps --db URL [--fleet F] [--device D] [--all]\n\n"+
			"Prints the missing sequence ranges the platform keeps, one JSON object per\n"+
			"line: {\"fleet\",\"device\",\"boot\",\"first_seq\",\"last_seq\",\"opened\",\"closed\",\"missing\",\"open\"}.\n"+
			"A gap closes when a late record fills it. The exit status is 0 either way.\n\nflags:\n")
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
	k, err := startConsultation(s, st, op, Consultation{Command: "gaps", Fleet: *fleet, Device: *device, Detail: fmt.Sprintf("all %v", *all)})
	if err != nil {
		return err
	}
	gs, err := st.Gaps(s.ctx, platform.GapQuery{Fleet: *fleet, Device: *device, All: *all})
	if err := k.finish(err, fmt.Sprintf("%d gaps", len(gs))); err != nil {
		return err
	}
	out := bufio.NewWriter(s.stdout)
	enc := json.NewEncoder(out)
	for _, g := range gs {
		if err := enc.Encode(g); err != nil {
			return err
		}
	}
	return out.Flush()
}

func runDevices(args []string, s stdio) error {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "database: postgres://... or sqlite:FILE (required)")
	fleet := fs.String("fleet", "", "fleet (default: every fleet)")
	asJSON := fs.Bool("json", false, "one JSON object per device instead of a table")
	op := addOperatorFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl devices --db URL [--fleet F] [--json]\n\n"+
			"Lists the devices the platform has heard from: online state, boot, last\n"+
			"seen, last fix, version and open gaps.\n\nflags:\n")
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
	k, err := startConsultation(s, st, op, Consultation{Command: "devices", Fleet: *fleet})
	if err != nil {
		return err
	}
	devs, err := st.Devices(s.ctx, *fleet)
	if err := k.finish(err, fmt.Sprintf("%d devices", len(devs))); err != nil {
		return err
	}
	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, d := range devs {
			if err := enc.Encode(d); err != nil {
				return err
			}
		}
		return out.Flush()
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FLEET\tDEVICE\tONLINE\tBOOT\tLAST SEEN\tLAST FIX\tVERSION\tOPEN GAPS\tMISSING")
	ts := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format("2006-01-02T15:04:05Z")
	}
	for _, d := range devs {
		online, boot := "?", "-"
		if d.Online != nil {
			online = map[bool]string{true: "yes", false: "no"}[*d.Online]
		}
		if d.Boot != nil {
			boot = fmt.Sprint(*d.Boot)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", d.Fleet, d.Device, online, boot, ts(d.LastSeen), ts(d.LastFixTime), d.Version, d.OpenGaps, d.Missing)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return out.Flush()
}
