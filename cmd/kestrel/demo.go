//go:build !kestrel_release

package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/hwtest/demo"
)

func runDemo(args []string, s stdio) error {
	fs := flag.NewFlagSet("kestrel demo", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	dur := fs.Duration("for", 0, "stop the simulated devices after this long, drain, print the summary and exit (default: when the track ends)")
	speed := fs.Float64("speed", 10, "GPS receiver cycles replayed per second")
	verbose := fs.Bool("v", false, "show the agent's own log (info level)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel demo [--for DURATION] [--speed N] [-v]\n\n"+
			"Runs the whole agent with no hardware and no broker: a GPS receiver replaying a real\n"+
			"recorded track over a pseudo-terminal, an LTE modem simulator, the firmware event\n"+
			"socket and an in-process MQTT broker. Prints what the platform receives, decoded,\n"+
			"then a summary: records, bytes per fix and sequence gaps (which must be zero).\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	ctx, stop := signal.NotifyContext(s.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, demo.Options{
		For:     *dur,
		Speed:   *speed,
		Out:     s.stdout,
		Log:     slog.New(slog.NewTextHandler(s.stderr, &slog.HandlerOptions{Level: level})),
		Version: version,
	})
	if err != nil && err != context.Canceled {
		return err
	}
	if len(sum.Gaps) > 0 || sum.Missing > 0 {
		return fmt.Errorf("%d sequence gaps and %d records not received", len(sum.Gaps), sum.Missing)
	}
	return nil
}
