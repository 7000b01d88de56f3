package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"golang.org/x/sys/unix"
)

// runStatus is the fitter's live view of the running agent, over its local
// control socket: no broker access needed, and nothing on the device is
// touched (unlike selftest, it opens no port).
func runStatus(args []string, s stdio) error {
	fs := flag.NewFlagSet("kestrel status", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	cfgPath := fs.String("config", "", "read status.socket from this config file")
	socket := fs.String("socket", "", "the agent's control socket (default: status.socket of --config, else "+localctl.DefaultPath+")")
	watch := fs.Bool("watch", false, "refresh in place until interrupted (like gpsmon)")
	every := fs.Duration("interval", time.Second, "refresh interval with --watch")
	asJSON := fs.Bool("json", false, "print JSON (one object per refresh with --watch)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrel status [--config FILE | --socket PATH] [--watch [--interval D]] [--json]\n\n"+
			"Shows the running agent's live state: its parts, GPS fix and satellites, radio\n"+
			"registration and signal, spool depth per lane, the broker connection and the\n"+
			"last PUBACK, and the running config version. It asks the agent over its local\n"+
			"control socket (root, the kestrel user and group), so it works without broker\n"+
			"access and beside the running agent.\n"+
			"Exit status: 0 ok, 1 the agent is not running or refused, 2 usage error.\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *every < 100*time.Millisecond {
		return fmt.Errorf("%w: --interval %s is below 100ms", errUsage, *every)
	}
	path := *socket
	if path == "" && *cfgPath != "" {
		c, err := config.Load(*cfgPath, nil)
		if err != nil {
			return err
		}
		path = c.Status.Socket
	}
	if path == "" {
		path = localctl.DefaultPath
	}
	tty := false
	if f, ok := s.stdout.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		tty = err == nil
	}
	for {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		st, err := localctl.Query(ctx, path)
		cancel()
		if err != nil && !*watch {
			if errors.Is(err, localctl.ErrNoAgent) {
				return fmt.Errorf("%w (is kestrel running? systemctl status kestrel)", err)
			}
			return err
		}
		if *watch && tty && !*asJSON {
			io.WriteString(s.stdout, "\x1b[H\x1b[2J") // home, clear: refresh in place
		}
		switch {
		case err != nil:
			fmt.Fprintf(s.stdout, "%s  %v\n", time.Now().Format("15:04:05"), err)
		case *asJSON:
			if err := json.NewEncoder(s.stdout).Encode(st); err != nil {
				return err
			}
		default:
			writeStatus(s.stdout, st)
		}
		if !*watch {
			return nil
		}
		if !tty && !*asJSON {
			fmt.Fprintln(s.stdout)
		}
		select {
		case <-s.ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format("15:04:05Z"), now.Sub(*t).Round(100*time.Millisecond))
}

// writeStatus prints the status as a fitter reads it.
func writeStatus(w io.Writer, st localctl.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintf(tw, "kestrel %s\tdevice %s/%s\tpid %d, boot %d, up %s\tconfig v%d\n", st.Version, st.Fleet, st.Device,
		st.PID, st.Boot, st.Now.Sub(st.Started).Round(time.Second), st.ConfigVersion)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "PART\tDEVICE\tSTATE")
	for _, p := range st.Parts {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Device, p.State)
	}
	caps := make([]string, 0, len(st.Capabilities))
	for k := range st.Capabilities {
		caps = append(caps, k)
	}
	sort.Strings(caps)
	for _, k := range caps {
		fmt.Fprintf(tw, "%s\t\t%s\n", k, st.Capabilities[k])
	}
	fmt.Fprintln(tw)
	if g := st.GPS; g != nil {
		fmt.Fprintf(tw, "gps\t%s, mode %dD, %d/%d sats used/in view, hdop %.2f\tsentences %d, bad %d\n",
			g.State, g.Mode, g.SatsUsed, g.SatsInView, g.HDOP, g.Sentences, g.BadFrames)
		if g.LastFix != nil {
			fmt.Fprintf(tw, "last fix\t%s\t%.7f %.7f\n", ago(st.Now, g.LastFix), g.Lat, g.Lon)
		} else {
			fmt.Fprintln(tw, "last fix\tnone yet")
		}
	} else {
		fmt.Fprintln(tw, "gps\tnothing heard yet")
	}
	if r := st.Radio; r != nil {
		sig := fmt.Sprintf("rssi %d dBm", r.RSSI)
		if r.RSRP != 0 {
			sig += fmt.Sprintf(", rsrp %d dBm", r.RSRP)
		}
		fmt.Fprintf(tw, "radio\t%s, online %t, %s %s\t%s\n", r.Profile, r.Online, r.Registered, r.Operator, sig)
	}
	lanes := []string{}
	for _, n := range []string{"emergency", "high", "normal", "bulk"} {
		lanes = append(lanes, fmt.Sprintf("%s %d", n, st.Spool.Lanes[n]))
	}
	fmt.Fprintf(tw, "spool\t%s, %d records, %d/%d bytes, oldest %.0fs\t%s (writes %s)\n", st.Spool.Health, st.Spool.Records,
		st.Spool.Bytes, st.Spool.Max, st.Spool.Oldest, strings.Join(lanes, ", "), st.Spool.Writes)
	conn := "disconnected"
	if st.Broker.Connected {
		conn = "connected"
	}
	fmt.Fprintf(tw, "broker\t%s %s\tlast PUBACK %s, %d messages, %d records\n", conn, strings.Join(st.Broker.URLs, ","),
		ago(st.Now, st.Broker.LastAck), st.Broker.Messages, st.Broker.Records)
}
