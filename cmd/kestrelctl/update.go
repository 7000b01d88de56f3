package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// OTA updates, the operator side (issue 17, docs/ota.md): update push
// publishes a signed release's chunks and manifest, staged like config
// push (planStages, the same failure limits); update status shows where
// each device is; update clear removes what push retained.

const updateUsage = `usage:
  kestrelctl update push --fleet F [--group G|--device D|--all] [--canary N] [--stages LIST]
      [--max-failures N|P%] [--dry-run] [--json] MANIFEST BINARY [DELTA]
  kestrelctl update status --fleet F [--device D] [--json] [--db URL [--history]]
  kestrelctl update clear --fleet F (--all|--group G|--device D) [--keep-chunks] [--json]

push publishes the binary (and the delta, if the manifest names one) in
retained chunks on kestrel/v1/F/_release/SHA256/N, then the signed manifest
(kestrelctl release sign) retained on the target's update/desired topic,
and waits for every device's update/reported: good, reverted, rejected or
failed. --canary and --stages roll out in stages with config push's rules;
a stage with more failures than allowed stops the rollout. status reads the
devices' retained reports (or, with --db, the platform's updates table).
clear removes a scope's retained manifest and the chunks no other retained
manifest uses. Run each with -h for its flags.`

func runUpdate(args []string, s stdio) error {
	if len(args) == 0 {
		fmt.Fprintln(s.stderr, updateUsage)
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	switch args[0] {
	case "push":
		return updatePush(args[1:], s)
	case "status":
		return updateStatus(args[1:], s)
	case "clear":
		return updateClear(args[1:], s)
	case "-h", "--help", "help":
		fmt.Fprintln(s.stdout, updateUsage)
		return nil
	}
	fmt.Fprintln(s.stderr, updateUsage)
	return fmt.Errorf("%w: unknown update subcommand %q", errUsage, args[0])
}

// Update results per device, beside fleet.UpdateGood and the other
// terminal states a device reports.
const (
	resultNoAnswer  = "no_answer"
	resultUntrusted = "untrusted"
)

// terminal says whether a reported state ends the device's handling of a
// release.
func terminal(state string) bool {
	switch state {
	case fleet.UpdateGood, fleet.UpdateReverted, fleet.UpdateRejected, fleet.UpdateFailed:
		return true
	}
	return false
}

// updateView is what the broker retains about updates: the fleet's state
// messages (device keys, groups), each device's last update report with
// the verdict on its device signature, and each scope's manifest.
type updateView struct {
	*fleetView
	reports   map[string]*judgedUpdate // by device
	manifests map[string]*fleet.Release
}

type judgedUpdate struct {
	report  *fleet.UpdateReport
	verdict string
	err     error
	at      time.Time // when kestrelctl received it
}

func newUpdateView(fleetID string) *updateView {
	return &updateView{fleetView: newFleetView(fleetID), reports: map[string]*judgedUpdate{}, manifests: map[string]*fleet.Release{}}
}

func updateFilters(fleetID string) []string {
	p := fleet.Prefix(fleetID)
	return []string{p + "+/" + fleet.ChannelState, p + "+/" + fleet.ChannelUpdateReported,
		p + "+/" + fleet.ChannelUpdateDesired, p + "_group/+/" + fleet.ChannelUpdateDesired}
}

// updateScope maps a topic to the scope whose update/desired it is.
func updateScope(fleetID, topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, fleet.Prefix(fleetID))
	if !ok {
		return "", false
	}
	rest, ok = strings.CutSuffix(rest, "/"+fleet.ChannelUpdateDesired)
	switch {
	case !ok:
		return "", false
	case rest == "_all":
		return "all", true
	case strings.HasPrefix(rest, "_group/") && !strings.Contains(rest[7:], "/"):
		return "group/" + rest[7:], true
	case !strings.HasPrefix(rest, "_") && !strings.Contains(rest, "/"):
		return "device/" + rest, true
	}
	return "", false
}

// addAll files messages, the states first (they announce the device keys).
func (v *updateView) addAll(msgs []paho.Message) []string {
	v.fleetView.addAll(msgs)
	var changed []string
	for _, m := range msgs {
		if d := v.add(m); d != "" {
			changed = append(changed, d)
		}
	}
	return changed
}

// add files an update message; it returns the device whose report it was.
func (v *updateView) add(m paho.Message) string {
	topic := m.Topic()
	if sc, ok := updateScope(v.fleet, topic); ok {
		if len(m.Payload()) == 0 {
			delete(v.manifests, sc)
		} else if r, err := fleet.DecodeRelease(m.Payload()); err == nil {
			v.manifests[sc] = r
		}
		return ""
	}
	if !strings.HasSuffix(topic, "/"+fleet.ChannelUpdateReported) {
		return ""
	}
	dev := deviceOf(topic)
	if dev == "" || strings.HasPrefix(dev, "_") || len(m.Payload()) == 0 {
		return ""
	}
	r, err := fleet.DecodeUpdateReport(m.Payload())
	if err != nil {
		return ""
	}
	j := &judgedUpdate{report: r, at: time.Now()}
	j.verdict, j.err = v.keys.verdict(topic, r.Signature)
	if prev := v.reports[dev]; prev != nil && trusted(prev.verdict) && !trusted(j.verdict) {
		// A forgery does not overwrite the device's own word; note it.
		v.untrusted[dev] = fmt.Sprintf("%s: %v", j.verdict, j.err)
		return dev
	}
	v.reports[dev] = j
	return dev
}

// answer is a device's result for release seq, or nil while it has none.
func (v *updateView) answer(dev string, seq uint64, stage string) *deviceResult {
	j := v.reports[dev]
	if j == nil || j.report.Seq != seq || !terminal(j.report.State) {
		return nil
	}
	rp := j.report
	dr := &deviceResult{Device: dev, Result: rp.State, Version: rp.Seq, Running: rp.Running, Stage: stage, Signature: j.verdict}
	if rp.Reason != "" {
		dr.Errors = []fleet.ReportError{{Error: rp.Reason}}
	}
	if !trusted(j.verdict) {
		dr.Result = resultUntrusted
		dr.Errors = append([]fleet.ReportError{{Error: fmt.Sprintf("report claims %s, NOT BELIEVED: %v", rp.State, j.err)}}, dr.Errors...)
	}
	return dr
}

// ---- update push ----

// updatePushReport is what update push prints with --json.
type updatePushReport struct {
	Command         string         `json:"command"`
	DryRun          bool           `json:"dry_run,omitempty"`
	Target          string         `json:"target"`
	Topic           string         `json:"topic"`
	Version         string         `json:"version"`
	Seq             uint64         `json:"seq"`
	SHA256          string         `json:"sha256"`
	Size            int64          `json:"size"`
	Delta           *fleet.Delta   `json:"delta,omitempty"`
	ChunkSize       int            `json:"chunk_size"`
	Chunks          int            `json:"chunks"` // binary and delta
	ChunksPublished int            `json:"chunks_published"`
	Stages          []stageReport  `json:"stages,omitempty"`
	Devices         []deviceResult `json:"devices"`
	Counts          map[string]int `json:"counts"`
	Stopped         bool           `json:"stopped"`
	StopReason      string         `json:"stop_reason,omitempty"`
}

type updatePushFlags struct {
	bf                *fleetconn.Broker
	tf                targetFlags
	timeout, discover *time.Duration
	devices           *string
	dryRun, asJSON    *bool
	canary            *int
	stages            *string
	limits            pushFlags // config push's failure limits: canaryMax, maxFailures
	pubs              *signKeyFlags
	window            *int
}

const updatePushUsage = `usage: kestrelctl update push --fleet F [--group G|--device D|--all] [flags] MANIFEST BINARY [DELTA]

Checks MANIFEST (kestrelctl release sign) against BINARY (and DELTA when
the manifest names one): shape, expiry, SHA-256 and size, and with --pub
its release signature. Publishes the blobs in retained chunks (QoS 1) on
kestrel/v1/F/_release/SHA256/N, then the manifest retained on the target's
update/desired topic (default: the manifest's own target; a --group or
--device must lie inside it), and waits for each device's update/reported
until it is good, reverted, rejected or failed, or --timeout passes (no
answer). A report whose device signature does not check against the key
the device's state announces is not believed and counts as a failure.

--canary N and --stages 10,50%,100% stage a fleet or group rollout as config
push does: every stage but the last gets the manifest on each device's own
update/desired topic; the last stage publishes it at the target. A stage
with more failures (anything but good) than --canary-max-failures (canary,
default 0) or --max-failures (default 10%) allows stops the rollout: the
release is not published further and the staged devices' device-scope
manifests are removed. After a full rollout only the target's manifest is
retained. Exits 0 only when every device is good. --dry-run prints the plan
and publishes nothing.

flags:`

func updatePush(args []string, s stdio) error {
	fs := flag.NewFlagSet("update push", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	fs.Usage = func() { fmt.Fprintln(s.stderr, updatePushUsage); fs.PrintDefaults() }
	p := &updatePushFlags{bf: fleetconn.AddFlags(fs), tf: addTargetFlags(fs)}
	p.timeout = fs.Duration("timeout", 10*time.Minute, "how long to wait for the devices' results, per stage")
	p.discover = fs.Duration("discover", 2*time.Second, "longest wait for the retained state that says which devices to expect")
	p.devices = fs.String("devices", "", "comma-separated device ids to expect (overrides discovery)")
	p.dryRun = fs.Bool("dry-run", false, "print the plan (chunks, stages, devices); publish nothing")
	p.canary = fs.Int("canary", 0, "first update `N` devices of the group or fleet and stop if they fail")
	p.stages = fs.String("stages", "", "stage sizes `LIST`: counts or percentages of the devices, e.g. 1,10,100%")
	p.limits.canaryMax = fs.Int("canary-max-failures", 0, "failures the canary stage may have")
	p.limits.maxFailures = fs.String("max-failures", "10%", "failures a later stage may have: N devices or P% of the stage")
	p.pubs = &signKeyFlags{}
	fs.Var(p.pubs, "pub", "check the manifest's signature against this release public key `FILE` (keygen's .pub); repeatable")
	p.window = fs.Int("window", 16, "chunk publications in flight at once")
	p.asJSON = addJSONFlag(fs)
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		return fmt.Errorf("%w: want MANIFEST BINARY [DELTA]", errUsage)
	}
	if err := p.bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *p.canary < 0 || *p.limits.canaryMax < 0 || *p.window < 1 {
		return fmt.Errorf("%w: --canary, --canary-max-failures must not be negative, --window at least 1", errUsage)
	}
	stageList, err := parseStages(*p.stages)
	if err != nil {
		return fmt.Errorf("%w: --stages: %v", errUsage, err)
	}
	p.limits.stageList = stageList
	if err := p.limits.parseLimit(); err != nil {
		return err
	}
	rel, raw, blobs, err := loadRelease(fs.Arg(0), fs.Arg(1), fs.Arg(2), p.bf.Fleet, *p.pubs)
	if err != nil {
		return err
	}
	tg := rel.Target()
	if *p.tf.device != "" || *p.tf.group != "" || *p.tf.all {
		if tg, err = p.tf.target(p.bf.Fleet); err != nil {
			return err
		}
	}
	staged := *p.canary > 0 || *p.stages != ""
	if staged && strings.HasPrefix(tg.Scope, "device/") {
		return fmt.Errorf("%w: --canary and --stages roll out a --group or --all push", errUsage)
	}

	ctx := fleetCtx(s)
	cl, col, view, err := openUpdateView(ctx, p.bf, "update", *p.discover)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	if err := releaseReaches(rel, tg, view); err != nil {
		return err
	}

	expected := deviceList(*p.devices)
	if expected == nil {
		expected = view.members(tg.Scope)
	}
	if len(expected) == 0 {
		return fmt.Errorf("no device known in %s (from retained state); not pushed (use --devices to push anyway)", tg)
	}
	ends, names := planStages(len(expected), *p.canary, stageList)
	if !staged {
		ends, names = []int{len(expected)}, []string{"all"}
	}
	rep := &updatePushReport{Command: "update push", Target: tg.String(), Topic: tg.UpdateTopic(), Version: rel.Version, Seq: rel.Seq,
		SHA256: rel.SHA256, Size: rel.Size, Delta: rel.Delta, ChunkSize: rel.ChunkSize, Counts: map[string]int{}, Devices: []deviceResult{}}
	for _, b := range blobs {
		rep.Chunks += fleet.Chunks(int64(len(b.data)), rel.ChunkSize)
	}
	// A staged device's own device-scope release would be overwritten and
	// then removed: refuse rather than lose it.
	if len(ends) > 1 {
		for _, d := range expected[:ends[len(ends)-2]] {
			if own := view.manifests["device/"+d]; own != nil && own.Seq != rel.Seq {
				return fmt.Errorf("device %s has its own release %s (seq %d) retained at device scope; clear it first (kestrelctl update clear --device %s) or leave it out with --devices; not pushed", d, own.Version, own.Seq, d)
			}
		}
	}
	if *p.dryRun {
		rep.DryRun = true
		rep.Stages = stagesOf(expected, ends, names, &p.limits, tg.Scope)
		if *p.asJSON {
			return writeJSON(s.stdout, rep)
		}
		printUpdatePlan(s.stdout, rep)
		return nil
	}

	ro := &updateRollout{s: s, p: p, cl: cl, col: col, view: view, rel: rel, rep: rep, raw: raw}
	for _, b := range blobs {
		n, err := ro.publishChunks(ctx, b)
		rep.ChunksPublished += n
		if err != nil {
			return err
		}
	}
	if err := ro.run(ctx, tg, expected, stagesOf(expected, ends, names, &p.limits, tg.Scope)); err != nil {
		return err
	}
	if err := writeRollout(s, *p.asJSON, rep.Devices, rep.Counts, rep, func(w io.Writer) { printUpdateReport(w, rep) }); err != nil {
		return err
	}
	return updateVerdict(rep)
}

// subscribeWorded is fleetSubscribe with a failed subscription worded
// "subscribe: ..." (a failed connect says what it says).
func subscribeWorded(ctx context.Context, bf *fleetconn.Broker, role string, filters ...string) (paho.Client, *collector, error) {
	cl, col, err := fleetSubscribe(ctx, bf, role, filters...)
	if errors.As(err, new(subscribeError)) {
		return nil, nil, fmt.Errorf("subscribe: %w", err)
	}
	return cl, col, err
}

// deviceList is a --devices list, sorted; nil when empty.
func deviceList(s string) []string {
	var out []string
	for _, d := range strings.Split(s, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

// stagesOf lays expected out in the stages planStages ended at ends: every
// stage but the last at device scope, the last at scope, with each
// stage's failure limit.
func stagesOf(expected []string, ends []int, names []string, limits *pushFlags, scope string) []stageReport {
	var out []stageReport
	start := 0
	for i, end := range ends {
		st := stageReport{Name: names[i], Via: "device-scope", Devices: expected[start:end], Limit: limits.stageLimit(names[i], end-start)}
		if i == len(ends)-1 {
			st.Via = scope
		}
		out = append(out, st)
		start = end
	}
	return out
}

// blob is one file push publishes in chunks: the binary or the delta.
type blob struct {
	what, sha string
	data      []byte
}

// loadRelease reads and checks a manifest and the files it names.
func loadRelease(manifestPath, binaryPath, deltaPath, fleetID string, pubs []string) (*fleet.Release, []byte, []blob, error) {
	mb, err := os.ReadFile(manifestPath)
	if err != nil {
		return nil, nil, nil, err
	}
	rel, err := fleet.DecodeRelease(mb)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", manifestPath, err)
	}
	if rel.Fleet != fleetID {
		return nil, nil, nil, fmt.Errorf("%s is addressed to fleet %q, not %q; not pushed", manifestPath, rel.Fleet, fleetID)
	}
	if now := time.Now(); now.UnixMilli() >= rel.Expires {
		return nil, nil, nil, fmt.Errorf("%s: %w at %s; sign a new one; not pushed", manifestPath, fleet.ErrReleaseExpired,
			time.UnixMilli(rel.Expires).UTC().Format(time.RFC3339))
	}
	if len(pubs) > 0 {
		var entries []string
		for _, f := range pubs {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, nil, nil, err
			}
			k := strings.TrimSpace(string(b))
			if !strings.Contains(k, ":") {
				k = fleet.RoleRelease + ":" + k
			}
			entries = append(entries, k)
		}
		kr, err := fleet.NewKeyring(entries)
		if err != nil {
			return nil, nil, nil, err
		}
		if _, err := kr.VerifyRelease(rel, 1); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w; not pushed", manifestPath, err)
		}
	}
	bin, err := readBounded(binaryPath)
	if err != nil {
		return nil, nil, nil, err
	}
	if got := sha256hex(bin); got != rel.SHA256 || int64(len(bin)) != rel.Size {
		return nil, nil, nil, fmt.Errorf("%s (%d bytes, sha256 %s) is not the binary %s names (%d bytes, sha256 %s); not pushed",
			binaryPath, len(bin), got, manifestPath, rel.Size, rel.SHA256)
	}
	blobs := []blob{{"binary", rel.SHA256, bin}}
	switch {
	case rel.Delta != nil && deltaPath == "":
		return nil, nil, nil, fmt.Errorf("%s names a delta (sha256 %s): give its file after BINARY; not pushed", manifestPath, rel.Delta.SHA256)
	case rel.Delta == nil && deltaPath != "":
		return nil, nil, nil, fmt.Errorf("%s names no delta, but a DELTA file was given; not pushed", manifestPath)
	case rel.Delta != nil:
		d, err := readBounded(deltaPath)
		if err != nil {
			return nil, nil, nil, err
		}
		if got := sha256hex(d); got != rel.Delta.SHA256 || int64(len(d)) != rel.Delta.Size {
			return nil, nil, nil, fmt.Errorf("%s (sha256 %s) is not the delta %s names (sha256 %s); not pushed", deltaPath, got, manifestPath, rel.Delta.SHA256)
		}
		blobs = append(blobs, blob{"delta", rel.Delta.SHA256, d})
	}
	return rel, mb, blobs, nil
}

// releaseReaches checks that pushing at tg stays inside the manifest's own
// target: a device accepts a release only if the release is addressed to
// it (the fleet, one of its groups, or itself).
func releaseReaches(rel *fleet.Release, tg fleet.Target, view *updateView) error {
	switch {
	case rel.Scope == "all" || rel.Scope == tg.Scope:
		return nil
	case strings.HasPrefix(rel.Scope, "group/") && strings.HasPrefix(tg.Scope, "device/"):
		dev := strings.TrimPrefix(tg.Scope, "device/")
		if rel.Reaches(tg.Fleet, dev, view.groupsOf(dev)) {
			return nil
		}
		return fmt.Errorf("the release is addressed to %s and device %s is not known in it; not pushed", rel.Scope, dev)
	}
	return fmt.Errorf("the release is addressed to %s: it cannot be pushed to %s (sign it for that target); not pushed", rel.Scope, tg.Scope)
}

type updateRollout struct {
	s    stdio
	p    *updatePushFlags
	cl   paho.Client
	col  *collector
	view *updateView
	rel  *fleet.Release
	rep  *updatePushReport
	raw  []byte
}

func (ro *updateRollout) publish(ctx context.Context, topic string, payload []byte) error {
	if err := fleetconn.Wait(ctx, ro.cl.Publish(topic, 1, true, payload), 30*time.Second); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// publishChunks publishes a blob's chunks retained at QoS 1, --window in
// flight; it returns how many the broker acknowledged.
func (ro *updateRollout) publishChunks(ctx context.Context, b blob) (int, error) {
	n := fleet.Chunks(int64(len(b.data)), ro.rel.ChunkSize)
	tty := isTerminal(ro.s.stderr)
	var inflight []paho.Token
	done := 0
	drain := func(keep int) error {
		for len(inflight) > keep {
			if err := fleetconn.Wait(ctx, inflight[0], 60*time.Second); err != nil {
				return fmt.Errorf("publish %s chunk %d of %d: %w", b.what, done, n, err)
			}
			inflight = inflight[1:]
			done++
			if tty && (done%16 == 0 || done == n) {
				fmt.Fprintf(ro.s.stderr, "\r%s: %d/%d chunks", b.what, done, n)
			}
		}
		return nil
	}
	for i := 0; i < n; i++ {
		end := min(len(b.data), (i+1)*ro.rel.ChunkSize)
		inflight = append(inflight, ro.cl.Publish(fleet.ReleaseChunkTopic(ro.rel.Fleet, b.sha, i), 1, true, b.data[i*ro.rel.ChunkSize:end]))
		if err := drain(*ro.p.window - 1); err != nil {
			return done, err
		}
	}
	if err := drain(0); err != nil {
		return done, err
	}
	if tty {
		fmt.Fprintln(ro.s.stderr)
	}
	fmt.Fprintf(ro.s.stderr, "published the %s: %d chunks, %d bytes, retained on %s\n", b.what, n, len(b.data),
		strings.TrimSuffix(fleet.ReleaseChunkFilter(ro.rel.Fleet, b.sha), "+")+"N")
	return done, nil
}

// run is the rollout: each stage but the last at device scope, the last at
// the target; stop when a stage fails more than its limit.
func (ro *updateRollout) run(ctx context.Context, tg fleet.Target, expected []string, stages []stageReport) error {
	manifest := ro.raw
	var deviceScoped []string
	removeDeviceScoped := func() error {
		for _, d := range deviceScoped {
			if err := ro.publish(ctx, fleet.Device(tg.Fleet, d).UpdateTopic(), nil); err != nil {
				return err
			}
		}
		if len(deviceScoped) > 0 {
			fmt.Fprintf(ro.s.stderr, "removed the device-scope manifests of %d staged device(s)\n", len(deviceScoped))
		}
		return nil
	}
	for i, st := range stages {
		devs, last := st.Devices, i == len(stages)-1
		want := devs
		if last {
			if err := ro.publish(ctx, tg.UpdateTopic(), manifest); err != nil {
				return err
			}
			want = expected // the staged devices are counted with their first answer
		} else {
			for _, d := range devs {
				if err := ro.publish(ctx, fleet.Device(tg.Fleet, d).UpdateTopic(), manifest); err != nil {
					return err
				}
				deviceScoped = append(deviceScoped, d)
			}
		}
		fmt.Fprintf(ro.s.stderr, "stage %s: release %s (seq %d) to %d device(s) via %s\n", st.Name, ro.rel.Version, ro.rel.Seq, len(devs), st.Via)
		res := ro.await(ctx, want, st.Name)
		inStage := map[string]bool{}
		for _, d := range devs {
			inStage[d] = true
		}
		for _, dr := range res {
			if !inStage[dr.Device] {
				continue
			}
			ro.rep.Devices = append(ro.rep.Devices, dr)
			if dr.Result != fleet.UpdateGood {
				st.Failed++
			}
		}
		ro.rep.Stages = append(ro.rep.Stages, st)
		if !last && st.Failed > st.Limit {
			ro.rep.Stopped = true
			ro.rep.StopReason = fmt.Sprintf("stage %s: %d of %d device(s) failed, at most %d may", st.Name, st.Failed, len(devs), st.Limit)
			fmt.Fprintf(ro.s.stderr, "stopping the rollout: %s; release seq %d was not published to %s\n", ro.rep.StopReason, ro.rel.Seq, tg)
			return removeDeviceScoped()
		}
	}
	return removeDeviceScoped()
}

// await waits until every device in want has a terminal answer for the
// release, or --timeout.
func (ro *updateRollout) await(ctx context.Context, want []string, stage string) []deviceResult {
	prog := newPushProgress(ro.s.stderr, len(want))
	prog.labels = []string{fleet.UpdateGood, fleet.UpdateReverted, fleet.UpdateRejected, fleet.UpdateFailed}
	results := map[string]*deviceResult{}
	check := func() {
		for _, d := range want {
			if results[d] != nil && results[d].Result != resultUntrusted {
				continue
			}
			if dr := ro.view.answer(d, ro.rel.Seq, stage); dr != nil && (results[d] == nil || dr.Result != results[d].Result) {
				fresh := results[d] == nil
				results[d] = dr
				if fresh {
					prog.answer(dr, len(results))
				}
			}
		}
	}
	deadline := time.NewTimer(*ro.p.timeout)
	defer deadline.Stop()
wait:
	for {
		ro.view.addAll(ro.col.take())
		check()
		if len(results) >= len(want) {
			break
		}
		select {
		case <-ro.col.notify:
		case <-time.After(200 * time.Millisecond):
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	prog.finish()
	out := make([]deviceResult, 0, len(want))
	for _, d := range want {
		if results[d] == nil {
			dr := deviceResult{Device: d, Result: resultNoAnswer, Version: ro.rel.Seq, Stage: stage}
			if j := ro.view.reports[d]; j != nil {
				dr.Running = j.report.Running
				if j.report.Seq == ro.rel.Seq {
					dr.Errors = []fleet.ReportError{{Error: "last heard: " + progressText(j.report)}}
				}
			}
			results[d] = &dr
		}
		out = append(out, *results[d])
	}
	return out
}

func progressText(r *fleet.UpdateReport) string {
	s := strings.ReplaceAll(r.State, "_", " ")
	if r.Size > 0 && (r.State == fleet.UpdateDownloading || r.State == fleet.UpdateVerifying) {
		s += fmt.Sprintf(" %d%% of %s", r.Have*100/r.Size, humanBytes(r.Size))
		if r.Delta {
			s += " (delta)"
		}
	}
	return s
}

func printUpdatePlan(w io.Writer, rep *updatePushReport) {
	fmt.Fprintf(w, "dry run: release %s (seq %d), %d bytes, %d chunk(s) of %d bytes", rep.Version, rep.Seq, rep.Size, rep.Chunks, rep.ChunkSize)
	if rep.Delta != nil {
		fmt.Fprintf(w, " (with a %d-byte delta from seq %d)", rep.Delta.Size, rep.Delta.BaseSeq)
	}
	fmt.Fprintf(w, "\ntarget %s (%s); nothing published\n", rep.Target, rep.Topic)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tVIA\tDEVICES\tLIMIT\tWHO")
	for _, st := range rep.Stages {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", st.Name, st.Via, len(st.Devices), st.Limit, strings.Join(st.Devices, ","))
	}
	tw.Flush()
}

func printUpdateReport(w io.Writer, rep *updatePushReport) {
	printRollout(w, rep.Stages, 1, rep.Devices)
	fmt.Fprintf(w, "release %s (seq %d): good %d, reverted %d, rejected %d, failed %d, no answer %d\n", rep.Version, rep.Seq,
		countResult(rep.Devices, fleet.UpdateGood), countResult(rep.Devices, fleet.UpdateReverted), countResult(rep.Devices, fleet.UpdateRejected),
		countResult(rep.Devices, fleet.UpdateFailed), countResult(rep.Devices, resultNoAnswer))
	if n := countResult(rep.Devices, resultUntrusted); n > 0 {
		fmt.Fprintf(w, "%d report(s) failed the device signature check: counted as failures\n", n)
	}
	if rep.Stopped {
		fmt.Fprintf(w, "rollout stopped: %s\n", rep.StopReason)
	}
}

// updateVerdict is the exit status: 0 only when every device is good.
func updateVerdict(rep *updatePushReport) error {
	if rep.Stopped {
		return fmt.Errorf("rollout of release seq %d stopped: %s", rep.Seq, rep.StopReason)
	}
	if bad := len(rep.Devices) - countResult(rep.Devices, fleet.UpdateGood); bad > 0 {
		return fmt.Errorf("%d of %d devices are not good on release seq %d", bad, len(rep.Devices), rep.Seq)
	}
	return nil
}
