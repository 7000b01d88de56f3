package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/drivers/nmea"
)

// runNMEA implements `kestrelctl nmea decode [FILE|-]`.
func runNMEA(args []string, s stdio) error {
	if len(args) == 0 || (args[0] != "decode" && args[0] != "-h" && args[0] != "--help" && args[0] != "help") {
		fmt.Fprintln(s.stderr, "usage: kestrelctl nmea decode [--date YYYY-MM-DD] [FILE|-]")
		return fmt.Errorf("%w: want the subcommand decode", errUsage)
	}
	if args[0] != "decode" {
		args = []string{"-h"}
	} else {
		args = args[1:]
	}
	fs := flag.NewFlagSet("nmea decode", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	date := fs.String("date", "", "UTC date `YYYY-MM-DD` for sentences that carry none (GGA/GLL-only logs); a \"# Date:\" line in the input overrides it")
	fs.Usage = func() {
		fmt.Fprint(s.stderr, `usage: kestrelctl nmea decode [--date YYYY-MM-DD] [FILE|-]

Reads NMEA 0183 (a log file, or standard input for - or no FILE) and prints
one JSON object per receiver cycle that has a 2D or 3D fix with a date:

  {"time":"2019-06-19T10:04:22.000Z","lat":51.5,"lon":-0.12,"alt":35.2,"speed":1.3,"track":271.5,"mode":3}

alt is metres above mean sea level, speed m/s, track degrees true; each is
null when no sentence of the cycle carried it. Sentences are merged per
cycle the way gpsd does it. Bad checksums, noise and unknown sentences are
skipped; a summary goes to standard error with -v.

`)
		fs.PrintDefaults()
	}
	verbose := fs.Bool("v", false, "print decoder counters to standard error at the end")
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	var opts nmea.Options
	if *date != "" {
		t, err := time.Parse("2006-01-02", *date)
		if err != nil {
			return fmt.Errorf("%w: --date: %v", errUsage, err)
		}
		opts.DateHint = t
	}
	in, err := openInput(fs.Args(), s)
	if err != nil {
		return err
	}
	defer in.Close()
	w := bufio.NewWriterSize(s.stdout, 64<<10)
	line := make([]byte, 0, 256)
	r := io.Reader(in)
	if s.ctx != nil {
		r = ctxReader{s.ctx, in}
	}
	st, err := nmea.Decode(r, opts, func(f nmea.Fix) error {
		line = f.AppendJSON(line[:0])
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if *verbose {
		fmt.Fprintf(s.stderr, "sentences %d, fixes %d, bad checksum %d, no checksum %d, framing %d, truncated %d, over-long %d, noise bytes %d, ignored %d\n",
			st.Sentences, st.Fixes, st.BadChecksum, st.NoChecksum, st.Framing, st.Truncated, st.Overlong, st.NoiseBytes, st.Ignored)
	}
	return nil
}

// ctxReader stops reading input once the command is interrupted.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
