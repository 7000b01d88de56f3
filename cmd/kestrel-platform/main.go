// Command kestrel-platform is the command platform's end of the wire:
// "kestrel-platform serve" ingests a fleet's MQTT traffic into PostgreSQL or
// SQLite, at least once, and serves the read API (see docs/platform.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/platform/web"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

var version = "dev"

type stdio struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
}

var errUsage = subcmd.ErrUsage

var commands = subcmd.Table[stdio]{Program: "kestrel-platform", Commands: map[string]subcmd.Command[stdio]{
	"serve":   {Summary: "serve --broker URL --db URL [--share GROUP] [--http ADDR]: ingest into the database", Run: runServe},
	"user":    {Summary: "user NAME viewer|supervisor: print a dashboard users-file line, the password read from stdin", Run: runUser},
	"version": {Summary: "version: print version, Go version and platform", Run: runVersion},
}}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := commands.Dispatch(os.Args[1:], stdio{ctx: ctx, stdout: os.Stdout, stderr: os.Stderr}, os.Stderr)
	stop()
	os.Exit(code)
}

func runUser(args []string, s stdio) error {
	if len(args) != 2 {
		return fmt.Errorf("%w: user NAME viewer|supervisor (the password on stdin)", errUsage)
	}
	pw, err := io.ReadAll(io.LimitReader(os.Stdin, 1024))
	if err != nil {
		return err
	}
	line, err := web.UserLine(args[0], web.Role(args[1]), strings.TrimRight(string(pw), "\r\n"))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	fmt.Fprintln(s.stdout, line)
	return nil
}

func runVersion(args []string, s stdio) error {
	if help, err := subcmd.NoFlags("version", "kestrel-platform version\n\nPrints the version, Go version, platform and database schema version.", args, s.stderr); help || err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "kestrel-platform %s %s %s/%s schema %d\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH, platform.SchemaVersion())
	return nil
}

func runServe(args []string, s stdio) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	broker := fs.String("broker", "", "broker URL: tls://host:8883, or tcp://127.0.0.1:1883 (required)")
	dbURL := fs.String("db", "", "database: postgres://user@host/db or sqlite:FILE (required)")
	share := fs.String("share", "", "MQTT shared subscription group: instances with the same group split the load")
	httpAddr := fs.String("http", "", "serve the read API and /metrics on ADDR (host:port)")
	clientID := fs.String("client-id", "", "persistent session id, fixed per instance (default kestrel-platform[-GROUP]-HOSTNAME)")
	fleets := fs.String("fleet", "+", "fleets to ingest, comma-separated (+: all)")
	batch := fs.Int("batch", 256, "most messages per transaction")
	wait := fs.Duration("batch-wait", 20*time.Millisecond, "how long a transaction waits for more messages")
	ca := fs.String("ca", "", "CA certificate (PEM) for a TLS broker")
	cert := fs.String("cert", "", "client certificate (PEM) for mutual TLS")
	key := fs.String("key", "", "client key (PEM) for mutual TLS")
	user := fs.String("username", "", "MQTT username; the password is read from $KESTREL_MQTT_PASSWORD")
	allowPlain := fs.Bool("allow-plaintext", false, "permit tcp:// to a host that is not loopback")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	var web_ web.HTTPConfig
	web_.Flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: kestrel-platform serve --broker URL --db URL [--share GROUP] [--http ADDR] [flags]

Subscribes with a persistent session (clean session off, a fixed client id)
at QoS 1 to telemetry, events, state, config/reported and audit of the
fleets, decodes them, writes each batch of messages in one transaction and
acknowledges (PUBACK) the messages only after it commits. Redelivered
records are stored once; missing sequence ranges are kept in the gaps table.
With --http it serves /api/v1/devices, /api/v1/gaps, /api/v1/track and
/metrics; with --users also the dashboard (docs/dashboard.md), everything
behind a login and over HTTPS.

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if *broker == "" || *dbURL == "" {
		return fmt.Errorf("%w: --broker and --db are required", errUsage)
	}
	if (*cert == "") != (*key == "") {
		return fmt.Errorf("%w: --cert and --key go together", errUsage)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("%w: --log-level %q", errUsage, *level)
	}
	log := slog.New(slog.NewTextHandler(s.stderr, &slog.HandlerOptions{Level: lv}))
	if *clientID == "" {
		host, _ := os.Hostname()
		*clientID = "kestrel-platform"
		if *share != "" {
			*clientID += "-" + *share
		}
		if host != "" {
			*clientID += "-" + host
		}
	}
	o := platform.IngestOptions{
		Broker: *broker, AllowPlaintext: *allowPlain, ClientID: *clientID, Share: *share,
		Fleets: strings.Split(*fleets, ","), BatchMax: *batch, BatchWait: *wait, Logger: log,
		Username: *user, Password: os.Getenv("KESTREL_MQTT_PASSWORD"),
	}
	if *ca != "" {
		if *cert == "" {
			return fmt.Errorf("%w: a TLS broker needs --cert and --key (mutual TLS)", errUsage)
		}
		tc, err := mqtt.LoadTLS(*ca, *cert, *key)
		if err != nil {
			return err
		}
		o.TLS = tc
	}
	ctx := s.ctx
	store, err := openWithRetry(ctx, *dbURL, log)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.PreparePartitions(ctx, time.Now(), time.Now().AddDate(0, 1, 0)); err != nil {
		return err
	}
	o.Metrics = platform.NewMetrics()
	if *httpAddr != "" && web_.UsersFile != "" {
		web_.Commits = web.NewCommits()
		o.OnCommit = web_.Commits.OnCommit
	}
	in, err := platform.NewIngest(store, o)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *httpAddr != "" {
		web_.Addr = *httpAddr
		l, err := web.Start(ctx, web_, store, platform.API(store, o.Metrics, in.Connected), log)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		defer l.Close()
	}
	log.Info("serve", "broker", mqtt.RedactURL(o.Broker), "db", store.Dialect(), "postgis", store.PostGIS(), "client_id", o.ClientID, "share", o.Share)
	if err := in.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// openWithRetry waits for a database that is not up yet (a platform
// started with its database, or restarted while it restarts).
func openWithRetry(ctx context.Context, url string, log *slog.Logger) (*platform.Store, error) {
	delay := 200 * time.Millisecond
	for {
		st, err := platform.Open(ctx, url)
		if err == nil {
			return st, nil
		}
		if strings.Contains(err.Error(), "want postgres://") {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		log.Warn("database not ready; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
