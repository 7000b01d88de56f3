package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// updateRow is one device's update state, as update status prints it.
type updateRow struct {
	Device         string `json:"device"`
	RunningSeq     uint64 `json:"running_seq"`
	RunningVersion string `json:"running_version,omitempty"`
	Seq            uint64 `json:"seq"` // the release the report is about
	Version        string `json:"version,omitempty"`
	State          string `json:"state"` // a fleet.Update* state; "none" without a report
	Have           int64  `json:"have,omitempty"`
	Size           int64  `json:"size,omitempty"`
	Progress       *int   `json:"progress_percent,omitempty"`
	Delta          bool   `json:"delta,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Time           *int64 `json:"time,omitempty"` // the device's time of the report, ms
	Signature      string `json:"signature,omitempty"`
	SignatureError string `json:"signature_error,omitempty"`
}

// updateStatusReport is what update status prints with --json.
type updateStatusReport struct {
	Fleet   string      `json:"fleet"`
	Source  string      `json:"source"` // broker or db
	Desired []desiredAt `json:"desired,omitempty"`
	Devices []updateRow `json:"devices"`
}

type desiredAt struct {
	Scope   string `json:"scope"`
	Version string `json:"version"`
	Seq     uint64 `json:"seq"`
	Expires int64  `json:"expires"`
}

func rowOf(dev string, r *fleet.UpdateReport, verdict string, verr error) updateRow {
	row := updateRow{Device: dev, RunningSeq: r.Running, RunningVersion: r.RunningVersion, Seq: r.Seq, Version: r.Version,
		State: r.State, Have: r.Have, Size: r.Size, Delta: r.Delta, Reason: r.Reason, Signature: verdict}
	t := r.Time
	row.Time = &t
	if r.Size > 0 && !terminal(r.State) {
		p := int(min(100, r.Have*100/r.Size))
		row.Progress = &p
	}
	if !trusted(verdict) {
		row.SignatureError = fmt.Sprint(verr)
	}
	return row
}

func updateStatus(args []string, s stdio) error {
	fs := flag.NewFlagSet("update status", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	device := fs.String("device", "", "one device")
	db := fs.String("db", "", "read the platform database (postgres://... or sqlite:FILE) instead of the broker")
	history := fs.Bool("history", false, "with --db: every report, oldest first, not only each device's latest")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for the broker's retained messages")
	asJSON := addJSONFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl update status --fleet F [--device D] [--json] [--db URL [--history]]\n\n"+
			"Per device: the release it runs (seq and version), and its latest update report:\n"+
			"the release it is about, its state (downloading, verifying, staged,\n"+
			"pending_verify, good, rejected, failed, reverted), progress and the reason for a\n"+
			"rejection, failure or revert. From the broker's retained update/reported and\n"+
			"state messages, or with --db from the platform's updates table. A report whose\n"+
			"device signature does not check against the key the device announces is\n"+
			"marked untrusted.\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if bf.Fleet == "" {
		return fmt.Errorf("%w: --fleet (or $%s) is required", errUsage, fleetconn.FleetEnv)
	}
	rep := updateStatusReport{Fleet: bf.Fleet, Devices: []updateRow{}}
	if *db != "" {
		rep.Source = "db"
		st, err := openPlatformDB(s, *db)
		if err != nil {
			return err
		}
		defer st.Close()
		rows, err := st.Updates(s.ctx, platform.UpdateQuery{Fleet: bf.Fleet, Device: *device, History: *history})
		if err != nil {
			return err
		}
		for _, u := range rows {
			r, err := fleet.DecodeUpdateReport([]byte(u.Payload))
			if err != nil {
				return fmt.Errorf("stored report of %s: %w", u.Device, err)
			}
			verdict, verr := fleet.Verdict(r.Signature, u.DeviceKey, u.Fleet, u.Device, fleet.ChannelUpdateReported)
			rep.Devices = append(rep.Devices, rowOf(u.Device, r, verdict, verr))
		}
	} else {
		rep.Source = "broker"
		if err := bf.Check(true); err != nil {
			return fmt.Errorf("%w: %w", errUsage, err)
		}
		cl, _, view, err := openUpdateView(fleetCtx(s), bf, "update-status", *wait)
		if err != nil {
			return err
		}
		defer cl.Disconnect(250)
		devs := map[string]bool{}
		for _, d := range view.devices() {
			devs[d] = true
		}
		for d := range view.reports {
			devs[d] = true
		}
		for d := range devs {
			if *device != "" && d != *device {
				continue
			}
			if j := view.reports[d]; j != nil {
				rep.Devices = append(rep.Devices, rowOf(d, j.report, j.verdict, j.err))
				continue
			}
			row := updateRow{Device: d, State: "none"}
			if st := view.states[d]; st != nil {
				row.RunningVersion, _ = st["version"].(string)
				if n, ok := asInt(st["release_seq"]); ok && n >= 0 {
					row.RunningSeq = uint64(n)
				}
			}
			rep.Devices = append(rep.Devices, row)
		}
		sort.Slice(rep.Devices, func(i, j int) bool { return rep.Devices[i].Device < rep.Devices[j].Device })
		for sc, r := range view.manifests {
			rep.Desired = append(rep.Desired, desiredAt{Scope: sc, Version: r.Version, Seq: r.Seq, Expires: r.Expires})
		}
		sort.Slice(rep.Desired, func(i, j int) bool { return rep.Desired[i].Scope < rep.Desired[j].Scope })
	}
	if *asJSON {
		return writeJSON(s.stdout, rep)
	}
	return printUpdateStatus(s.stdout, rep, time.Now())
}

func printUpdateStatus(w io.Writer, rep updateStatusReport, now time.Time) error {
	for _, d := range rep.Desired {
		exp := "expired"
		if left := time.UnixMilli(d.Expires).Sub(now); left > 0 {
			exp = "expires in " + left.Round(time.Minute).String()
		}
		fmt.Fprintf(w, "desired at %s: release %s (seq %d), %s\n", d.Scope, d.Version, d.Seq, exp)
	}
	if len(rep.Devices) == 0 {
		fmt.Fprintf(w, "no update report from fleet %s (%s)\n", rep.Fleet, rep.Source)
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tRUNNING\tRELEASE\tSTATE\tPROGRESS\tSIGNATURE\tAGE\tREASON")
	for _, d := range rep.Devices {
		running := fmt.Sprintf("%d", d.RunningSeq)
		if d.RunningVersion != "" {
			running += " (" + d.RunningVersion + ")"
		}
		release := "-"
		if d.Seq > 0 {
			release = fmt.Sprintf("%d (%s)", d.Seq, d.Version)
		}
		progress := "-"
		if d.Progress != nil {
			progress = fmt.Sprintf("%d%% of %s", *d.Progress, humanBytes(d.Size))
			if d.Delta {
				progress += " delta"
			}
		}
		age := "-"
		if d.Time != nil {
			age = ago(now.Sub(time.UnixMilli(*d.Time)))
		}
		reason := d.Reason
		if d.SignatureError != "" {
			reason = "NOT BELIEVED: " + d.SignatureError + "; " + reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Device, running, release, strings.ReplaceAll(d.State, "_", " "),
			progress, dash(d.Signature), age, dash(reason))
	}
	return tw.Flush()
}

// ---- update clear ----

// updateClearReport is what update clear prints with --json.
type updateClearReport struct {
	Target        string   `json:"target"`
	Topic         string   `json:"topic"`
	Seq           uint64   `json:"seq,omitempty"`
	Version       string   `json:"version,omitempty"`
	ChunksRemoved int      `json:"chunks_removed"`
	KeptShared    []string `json:"kept_shared,omitempty"` // blobs another retained manifest still names
}

func updateClear(args []string, s stdio) error {
	fs := flag.NewFlagSet("update clear", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	tf := addTargetFlags(fs)
	keep := fs.Bool("keep-chunks", false, "remove only the manifest; keep the retained chunks")
	discover := fs.Duration("discover", 2*time.Second, "longest wait for the retained manifests")
	asJSON := addJSONFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl update clear --fleet F (--all|--group G|--device D) [--keep-chunks] [--json]\n\n"+
			"Removes the scope's retained release manifest (update/desired) and the retained\n"+
			"chunks of the binary and delta it names, except those another retained manifest\n"+
			"still names. A device that is mid-download stops finding chunks and reports\n"+
			"failed; a device already running the release keeps it.\n\nflags:")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	tg, err := checkTarget(bf, tf)
	if err != nil {
		return err
	}
	ctx := fleetCtx(s)
	cl, _, view, err := openUpdateView(ctx, bf, "update-clear", *discover)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	rep := updateClearReport{Target: tg.String(), Topic: tg.UpdateTopic()}
	pub := func(topic string) error {
		return fleetconn.Wait(ctx, cl.Publish(topic, 1, true, []byte{}), 30*time.Second)
	}
	rel := view.manifests[tg.Scope]
	if err := pub(tg.UpdateTopic()); err != nil {
		return fmt.Errorf("clear %s: %w", tg.UpdateTopic(), err)
	}
	if rel != nil {
		rep.Seq, rep.Version = rel.Seq, rel.Version
		delete(view.manifests, tg.Scope)
		if !*keep {
			if rep.ChunksRemoved, rep.KeptShared, err = clearChunks(ctx, pub, rel, view.manifests); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		return writeJSON(s.stdout, rep)
	}
	if rel == nil {
		fmt.Fprintf(s.stdout, "no release was retained at %s; cleared the topic anyway\n", tg.UpdateTopic())
		return nil
	}
	fmt.Fprintf(s.stdout, "removed release %s (seq %d) from %s and %d retained chunk(s)\n", rel.Version, rel.Seq, tg.UpdateTopic(), rep.ChunksRemoved)
	for _, k := range rep.KeptShared {
		fmt.Fprintf(s.stdout, "kept the chunks of %s: another retained manifest names them\n", k)
	}
	return nil
}

// clearChunks removes the retained chunks of the blobs rel names that no
// manifest in others names.
func clearChunks(ctx context.Context, pub func(string) error, rel *fleet.Release, others map[string]*fleet.Release) (int, []string, error) {
	used := map[string]bool{}
	for _, o := range others {
		used[o.SHA256] = true
		if o.Delta != nil {
			used[o.Delta.SHA256] = true
		}
	}
	type b struct {
		sha  string
		size int64
	}
	bs := []b{{rel.SHA256, rel.Size}}
	if rel.Delta != nil {
		bs = append(bs, b{rel.Delta.SHA256, rel.Delta.Size})
	}
	n := 0
	var kept []string
	for _, x := range bs {
		if used[x.sha] {
			kept = append(kept, x.sha)
			continue
		}
		for i := 0; i < fleet.Chunks(x.size, rel.ChunkSize); i++ {
			if err := ctx.Err(); err != nil {
				return n, kept, err
			}
			if err := pub(fleet.ReleaseChunkTopic(rel.Fleet, x.sha, i)); err != nil {
				return n, kept, fmt.Errorf("clear chunk %d of %s: %w", i, x.sha, err)
			}
			n++
		}
	}
	return n, kept, nil
}

// checkTarget checks the broker flags for a one-fleet command and returns
// the scope flags' target.
func checkTarget(bf *fleetconn.Broker, tf targetFlags) (fleet.Target, error) {
	if err := bf.Check(true); err != nil {
		return fleet.Target{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	return tf.target(bf.Fleet)
}

// openUpdateView subscribes to the fleet's update and state topics and
// files the retained messages that arrive within wait; col keeps
// gathering what comes after.
func openUpdateView(ctx context.Context, bf *fleetconn.Broker, role string, wait time.Duration) (paho.Client, *collector, *updateView, error) {
	cl, col, err := subscribeWorded(ctx, bf, role, updateFilters(bf.Fleet)...)
	if err != nil {
		return nil, nil, nil, err
	}
	col.settle(ctx, 300*time.Millisecond, wait)
	view := newUpdateView(bf.Fleet)
	view.addAll(col.take())
	return cl, col, view, nil
}
