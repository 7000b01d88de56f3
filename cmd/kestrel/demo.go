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
	dur := fs.Duration("for", 0, "stop the simulated devices after this long, drain, print the summary and exit (default: when the track ends; with --http the dashboard stays up until Ctrl-C)")
	speed := fs.Float64("speed", 10, "GPS receiver cycles replayed per second")
	verbose := fs.Bool("v", false, "show the agent's own log (info level)")
	httpAddr := fs.String("http", "", "also serve the dashboard on the demo's store at ADDR (\":8080\" is 127.0.0.1:8080), behind a one-time login printed here; plain HTTP on loopback only")
	https := fs.Bool("https", false, "serve the dashboard over HTTPS with a self-signed certificate, which a non-loopback --http address needs")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel demo [--for DURATION] [--speed N] [-v] [--http ADDR [--https]]\n\n"+
			"Runs the whole agent with no hardware and no broker: a GPS receiver replaying a real\n"+
			"recorded track over a pseudo-terminal, an LTE modem simulator, the firmware event\n"+
			"socket and an in-process MQTT broker. Prints what the platform receives, decoded,\n"+
			"then a summary: records, bytes per fix and sequence gaps (which must be zero).\n\n"+
			"With --http ADDR it also serves the dashboard (docs/dashboard.md) on the demo's\n"+
			"store, with a user \"demo\" (supervisor) whose random password is printed once\n"+
			"here and kept in memory only, never written to a file or the log; after the\n"+
			"summary the dashboard stays up until Ctrl-C. The demo serves plain HTTP, and\n"+
			"only on a loopback address (a bare :PORT is 127.0.0.1:PORT); any other address\n"+
			"needs --https, as kestrel-platform serve is HTTPS unless told otherwise.\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	if *httpAddr != "" {
		if _, err := demo.HTTPAddr(*httpAddr, *https); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	} else if *https {
		return fmt.Errorf("%w: --https goes with --http ADDR", errUsage)
	}
	ctx, stop := signal.NotifyContext(s.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, demo.Options{
		For:     *dur,
		Speed:   *speed,
		Out:     s.stdout,
		Log:     slog.New(slog.NewTextHandler(s.stderr, &slog.HandlerOptions{Level: level})),
		Version: version,
		HTTP:    *httpAddr,
		HTTPS:   *https,
	})
	if err != nil && err != context.Canceled {
		return err
	}
	if len(sum.Gaps) > 0 || sum.Missing > 0 {
		return fmt.Errorf("%d sequence gaps and %d records not received", len(sum.Gaps), sum.Missing)
	}
	return nil
}
