package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// pushMode is which config command runs the push.
type pushMode string

const (
	modePush     pushMode = "push"
	modeClear    pushMode = "clear"
	modeRollback pushMode = "rollback"
)

// deviceResult is one device's answer to one publication.
type deviceResult struct {
	Device  string              `json:"device"`
	Result  string              `json:"result"` // applied, rejected, rolled_back, no_answer
	Scope   string              `json:"scope"`  // the scope the device was pushed at
	Version uint64              `json:"version"`
	Running uint64              `json:"running_version"`
	Errors  []fleet.ReportError `json:"errors,omitempty"`
	Stage   string              `json:"stage,omitempty"`
	// Signature is the verdict on the report's device signature
	// (transport/fleet.Verdict); empty for no answer.
	Signature string `json:"signature,omitempty"`
}

// stageReport is one stage of a staged rollout.
type stageReport struct {
	Name    string   `json:"name"` // canary, 10%, 100%, all
	Via     string   `json:"via"`  // device-scope, or the pushed scope for the last
	Devices []string `json:"devices"`
	Failed  int      `json:"failed"`
	Limit   int      `json:"limit"` // most failures the stage may have
}

// pushReport is what push, clear and rollback print with --json.
type pushReport struct {
	Command    string         `json:"command"`
	Target     string         `json:"target"`
	Topic      string         `json:"topic"`
	Version    uint64         `json:"version"`
	KeyID      string         `json:"kid"`
	From       uint64         `json:"rollback_from,omitempty"` // rollback: the version whose content is restored
	Stages     []stageReport  `json:"stages,omitempty"`
	Devices    []deviceResult `json:"devices"`
	Counts     map[string]int `json:"counts"`
	Stopped    bool           `json:"stopped"`
	StopReason string         `json:"stop_reason,omitempty"`
	Restored   []deviceResult `json:"restored,omitempty"` // device scopes put back after staging
}

type pushFlags struct {
	bf                  *fleetconn.Broker
	tf                  targetFlags
	signKey             *signKeyFlags
	version             *uint64
	timeout, discover   *time.Duration
	watch               *time.Duration
	expect              *int
	devices             *string
	dryRun              *bool
	canary              *int
	stages              *string
	canaryMax           *int
	maxFailures         *string
	asJSON              *bool
	trusted             *string
	stageList           []stageSpec
	limitN, limitPct    int
	limitIsPct          bool
	pushedScope, prefix string
}

const pushUsage = `usage: kestrelctl config push (--device D | --group G | --all) [flags] FILE

Validates FILE (a partial TOML config) locally, signs it, publishes it
retained on the scope's config/desired topic and waits for each device's
config/reported message. Devices to expect come from the retained state
and report messages (for a group: the devices that list the group), or
--devices/--expect. A push to a group or fleet nobody is known in says so,
publishes nothing and exits 1. Exits 1 unless every device applied it.

--dry-run prints, per device, every key that would change (old -> new and
the scope each comes from) and publishes nothing.

--canary N and --stages 10,50%,100% roll a group or fleet push out in
stages: the devices of every stage but the last get the change as a
device-scope config that gives them exactly what the scope would (their
own device keys kept), since the scope's config is one retained message
that reaches every member at once. The last stage publishes the scope;
then each staged device's own device-scope config is put back. A stage
stops the rollout when more devices fail (rejected, rolled back, or no
answer within --timeout) than the canary allows (--canary-max-failures,
default 0) or a stage allows (--max-failures, default 10%); the staged
devices are then put back and the exit status is 1. See docs/config.md.

flags:`

func addPushFlags(fs *flag.FlagSet, mode pushMode) *pushFlags {
	p := &pushFlags{bf: fleetconn.AddFlags(fs), tf: addTargetFlags(fs)}
	p.signKey = addSignKeyFlag(fs)
	p.version = fs.Uint64("version", 0, "config version; must exceed every version the devices run at this scope (default: now in Unix seconds, or one above the retained version)")
	p.timeout = fs.Duration("timeout", 60*time.Second, "how long to wait for reports, per stage")
	p.discover = fs.Duration("discover", 2*time.Second, "longest wait for the retained state that says which devices to expect")
	p.expect = fs.Int("expect", 0, "wait for this many reports (default: the devices known from retained state)")
	p.devices = fs.String("devices", "", "comma-separated device ids to expect (overrides discovery)")
	p.watch = fs.Duration("watch", 0, "after every device answered, keep watching this long for rollbacks (see fleet.rollback_after)")
	p.dryRun = fs.Bool("dry-run", false, "print the effective change per device; publish nothing")
	p.canary = fs.Int("canary", 0, "first push to `N` devices of the group or fleet and stop if they fail")
	p.stages = fs.String("stages", "", "stage sizes `LIST`: counts or percentages of the devices, e.g. 1,10,100%")
	p.canaryMax = fs.Int("canary-max-failures", 0, "failures the canary stage may have")
	p.maxFailures = fs.String("max-failures", "10%", "failures a later stage may have: N devices or P% of the stage")
	p.asJSON = addJSONFlag(fs)
	if mode == modeRollback {
		p.trusted = fs.String("pub", "", "also accept a previous config signed by this public key file (keygen's .pub); the signing key's own is always accepted")
	}
	return p
}

// stageSpec is one --stages entry: a count or a percentage.
type stageSpec struct {
	n   int
	pct bool
}

func parseStages(s string) ([]stageSpec, error) {
	var out []stageSpec
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		pct := strings.HasSuffix(f, "%")
		n, err := strconv.Atoi(strings.TrimSuffix(f, "%"))
		if err != nil || n <= 0 || pct && n > 100 {
			return nil, fmt.Errorf("stage %q: want a count or a percentage (1..100%%)", f)
		}
		out = append(out, stageSpec{n, pct})
	}
	return out, nil
}

// planStages turns --canary and --stages into the cumulative device count
// at the end of each stage, ending at total.
func planStages(total, canary int, specs []stageSpec) (ends []int, names []string) {
	if canary > 0 {
		ends, names = append(ends, min(canary, total)), append(names, "canary")
	}
	for _, s := range specs {
		n := s.n
		name := strconv.Itoa(s.n)
		if s.pct {
			n = (total*s.n + 99) / 100 // round up: 10% of 5 is 1 device
			name += "%"
		}
		n = min(n, total)
		if len(ends) > 0 && n <= ends[len(ends)-1] {
			continue
		}
		ends, names = append(ends, n), append(names, name)
	}
	if len(ends) == 0 || ends[len(ends)-1] < total {
		ends, names = append(ends, total), append(names, "100%")
	}
	return ends, names
}

func runPush(args []string, s stdio, mode pushMode) error {
	fs := flag.NewFlagSet("config "+string(mode), flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	p := addPushFlags(fs, mode)
	fs.Usage = func() {
		switch mode {
		case modeClear:
			fmt.Fprintln(s.stderr, "usage: kestrelctl config clear (--device D | --group G | --all) [flags]\n\n"+
				"Signs and publishes an empty config for the scope, with a new version: the\n"+
				"scope then sets no key, and what the other scopes set stays. Waits for the\n"+
				"devices' reports, dry-runs and stages like push.\n\nflags:")
		case modeRollback:
			fmt.Fprintln(s.stderr, "usage: kestrelctl config rollback (--device D | --group G | --all) [flags]\n\n"+
				"Restores the scope's previous config: push and clear keep the config they\n"+
				"replace, retained on the scope's config/previous topic; rollback checks its\n"+
				"signature, signs its content again as a new, higher version (versions only\n"+
				"move forward) and pushes it like push (waits, dry-runs, stages). A second\n"+
				"rollback undoes the first.\n\nflags:")
		default:
			fmt.Fprintln(s.stderr, pushUsage)
		}
		fs.PrintDefaults()
	}
	var file string
	var body []byte
	if mode == modePush {
		var rest []string
		file, rest = subcmd.FileFirst(args)
		if help, err := subcmd.Parse(fs, rest); help || err != nil {
			return err
		}
		if file == "" && fs.NArg() == 1 {
			file = fs.Arg(0)
		} else if fs.NArg() != 0 || file == "" {
			return fmt.Errorf("%w: one config FILE is required", errUsage)
		}
	} else {
		if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
			return err
		}
		file, body = "("+string(mode)+")", []byte{}
	}
	if err := p.bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	tg, err := p.tf.target(p.bf.Fleet)
	if err != nil {
		return err
	}
	p.pushedScope, p.prefix = tg.Scope, "kestrel/v1/"+p.bf.Fleet+"/"
	staged := *p.canary > 0 || *p.stages != ""
	if *p.canary < 0 || *p.canaryMax < 0 || *p.expect < 0 {
		return fmt.Errorf("%w: --canary, --canary-max-failures and --expect must not be negative", errUsage)
	}
	if p.stageList, err = parseStages(*p.stages); err != nil {
		return fmt.Errorf("%w: --stages: %v", errUsage, err)
	}
	if err := p.parseLimit(); err != nil {
		return err
	}
	if staged && strings.HasPrefix(tg.Scope, "device/") {
		return fmt.Errorf("%w: --canary and --stages roll out a --group or --all push", errUsage)
	}
	if staged && *p.expect > 0 {
		return fmt.Errorf("%w: a staged push needs to know its devices: use --devices, not --expect", errUsage)
	}
	if mode == modePush {
		if body, err = os.ReadFile(file); err != nil {
			return err
		}
		if err := checkPushBody(s.stderr, file, body, p.bf.Fleet); err != nil {
			return err
		}
	}
	privs, err := loadSigningKeys(*p.signKey)
	if err != nil {
		return err
	}

	ctx := fleetCtx(s)
	cl, col, err := fleetSubscribe(ctx, p.bf, string(mode), fleetViewFilters(p.bf.Fleet)...)
	if errors.As(err, new(subscribeError)) {
		return fmt.Errorf("subscribe: %w", err)
	} else if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 300*time.Millisecond, *p.discover)
	view := newFleetView(p.bf.Fleet)
	raw := map[string][]byte{} // retained desired payloads by scope, for config/previous
	msgs := col.take()
	view.addAll(msgs)
	for _, m := range msgs {
		if sc, kind, ok := scopeOfTopic(view.fleet, m.Topic()); ok && kind == "desired" {
			raw[sc] = m.Payload()
		}
	}

	rep := pushReport{Command: string(mode), Target: tg.String(), Topic: tg.Topic(), KeyID: keyIDs(privs),
		Counts: map[string]int{}}
	if mode == modeRollback {
		prev, err := previousConfig(view, tg, privs, p.trusted)
		if err != nil {
			return err
		}
		body, rep.From = prev.Body, prev.Version
		file = fmt.Sprintf("(%s version %d)", tg.Scope, prev.Version)
		if err := checkPushBody(s.stderr, file, body, p.bf.Fleet); err != nil {
			return err
		}
	}
	v := *p.version
	if v == 0 {
		v = uint64(time.Now().Unix())
		if cur := view.desired[tg.Scope]; cur != nil && cur.Version >= v {
			v = cur.Version + 1
		}
	}
	rep.Version = v

	// Who should answer.
	var expected []string
	if *p.devices != "" {
		for _, d := range strings.Split(*p.devices, ",") {
			if d = strings.TrimSpace(d); d != "" {
				expected = append(expected, d)
			}
		}
		sort.Strings(expected)
	} else if *p.expect == 0 {
		expected = view.members(tg.Scope)
	}
	if len(expected) == 0 && *p.expect == 0 {
		// Nobody to wait for: a typo in a group name, or a fleet not yet
		// online. Say so rather than publish into silence.
		what := "the fleet"
		if *p.tf.group != "" {
			what = "group " + *p.tf.group
		}
		return fmt.Errorf("no device known in %s (from retained state and reports); not pushed (use --devices or --expect to push anyway)", what)
	}

	if *p.dryRun {
		res := dryRunResult{DryRun: true, Target: tg.String(), Topic: tg.Topic(), Version: v, Devices: []deviceDiff{}}
		for _, d := range expected {
			res.Devices = append(res.Devices, dryRunDevice(view, d, tg.Scope, body))
		}
		if *p.asJSON {
			return writeJSON(s.stdout, res)
		}
		printDryRun(s.stdout, res)
		return nil
	}
	if mode == modeRollback {
		fmt.Fprintf(s.stderr, "rolling %s back to the content of version %d, as version %d\n", tg, rep.From, v)
	}

	r := &rollout{s: s, p: p, cl: cl, col: col, view: view, privs: privs, v: v, rep: &rep}
	if staged {
		err = r.staged(ctx, tg, body, expected, raw)
	} else {
		err = r.single(ctx, tg, body, expected, raw)
	}
	if err != nil && !errors.Is(err, errRolloutFailed) {
		return err
	}
	if err := writeRollout(s, *p.asJSON, rep.Devices, rep.Counts, rep, func(w io.Writer) { printPushReport(w, &rep) }); err != nil {
		return err
	}
	return pushVerdict(&rep)
}

// writeRollout counts a push's results by kind and prints its report: the
// JSON document, or the table.
func writeRollout(s stdio, asJSON bool, devices []deviceResult, counts map[string]int, rep any, table func(io.Writer)) error {
	for _, d := range devices {
		counts[d.Result]++
	}
	if asJSON {
		return writeJSON(s.stdout, rep)
	}
	table(s.stdout)
	return nil
}

// errRolloutFailed: the report says what went wrong; print it first.
var errRolloutFailed = errors.New("rollout failed")

func (p *pushFlags) parseLimit() error {
	s := strings.TrimSpace(*p.maxFailures)
	p.limitIsPct = strings.HasSuffix(s, "%")
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || n < 0 || p.limitIsPct && n > 100 {
		return fmt.Errorf("%w: --max-failures %q: want N or P%%", errUsage, *p.maxFailures)
	}
	if p.limitIsPct {
		p.limitPct = n
	} else {
		p.limitN = n
	}
	return nil
}

// stageLimit is the most failures a stage of size n may have.
func (p *pushFlags) stageLimit(name string, n int) int {
	switch {
	case name == "canary":
		return *p.canaryMax
	case p.limitIsPct:
		return n * p.limitPct / 100 // 10% of 5 devices: 0 may fail
	}
	return p.limitN
}

// checkPushBody catches what every device would reject before it goes out.
func checkPushBody(stderr io.Writer, file string, body []byte, fleetID string) error {
	problems := overlayProblems(body, fleetID)
	for _, fe := range problems {
		fmt.Fprintf(stderr, "%s: %v\n", file, fe)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s would be rejected; not pushed", file)
	}
	return nil
}

// previousConfig is the scope's config/previous envelope, checked: signed
// by the signing key's own public key or one given with --pub, and
// addressed to this scope.
func previousConfig(view *fleetView, tg fleet.Target, privs []ed25519.PrivateKey, pubFile *string) (*fleet.ConfigEnvelope, error) {
	prev := view.previous[tg.Scope]
	if prev == nil {
		return nil, fmt.Errorf("no previous config retained for %s (push and clear keep one from now on); nothing to roll back to", tg)
	}
	var keys []string
	for _, k := range privs {
		keys = append(keys, fleet.EncodePublicKey(k.Public().(ed25519.PublicKey)))
	}
	if pubFile != nil && *pubFile != "" {
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return nil, err
		}
		keys = append(keys, strings.TrimSpace(string(b)))
	}
	kr, err := fleet.NewKeyring(keys)
	if err != nil {
		return nil, err
	}
	if prev.Target() != tg {
		return nil, fmt.Errorf("the previous config retained for %s is addressed to %s; not rolled back", tg, prev.Target())
	}
	if err := kr.VerifyConfig(prev, true); err != nil {
		return nil, fmt.Errorf("the previous config retained for %s does not verify (%w); not rolled back (--pub adds a key)", tg, err)
	}
	return prev, nil
}

// rollout publishes and waits.
type rollout struct {
	s     stdio
	p     *pushFlags
	cl    paho.Client
	col   *collector
	view  *fleetView
	privs []ed25519.PrivateKey
	v     uint64
	rep   *pushReport
}

func (r *rollout) publish(ctx context.Context, topic string, payload []byte) error {
	if err := fleetconn.Wait(ctx, r.cl.Publish(topic, 1, true, payload), 15*time.Second); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// publishScope keeps the scope's current desired config as its previous
// (for rollback), then publishes the new one.
func (r *rollout) publishScope(ctx context.Context, tg fleet.Target, env []byte, raw map[string][]byte) error {
	if cur := raw[tg.Scope]; len(cur) > 0 {
		if err := r.publish(ctx, previousTopic(tg), cur); err != nil {
			return err
		}
	}
	return r.publish(ctx, tg.Topic(), env)
}

func previousTopic(tg fleet.Target) string {
	return strings.TrimSuffix(tg.Topic(), "/desired") + "/previous"
}

// single is an unstaged push: one publication at the scope.
func (r *rollout) single(ctx context.Context, tg fleet.Target, body []byte, expected []string, raw map[string][]byte) error {
	env, err := fleet.SignConfigBy(r.privs, tg, r.v, body)
	if err != nil {
		return err
	}
	if err := r.publishScope(ctx, tg, env, raw); err != nil {
		return err
	}
	want := map[string]string{}
	for _, d := range expected {
		want[d] = tg.Scope
	}
	n := len(expected)
	if *r.p.expect > 0 {
		n = *r.p.expect
	}
	fmt.Fprintf(r.s.stderr, "pushed version %d to %s (%s), %d bytes, key %s; waiting for %d device(s)\n",
		r.v, tg, tg.Topic(), len(env), r.rep.KeyID, n)
	r.rep.Devices = r.await(ctx, want, r.v, *r.p.expect, "")
	return nil
}

// staged rolls a scope push out stage by stage (see pushUsage).
func (r *rollout) staged(ctx context.Context, tg fleet.Target, body []byte, expected []string, raw map[string][]byte) error {
	ends, names := planStages(len(expected), *r.p.canary, r.p.stageList)
	// Check every staged device can take a device-scope push at v and v+1
	// before anything goes out.
	type saved struct {
		body    []byte
		version uint64
	}
	own := map[string]saved{}
	stagedDevs := expected[:0:0]
	if len(ends) > 1 {
		stagedDevs = expected[:ends[len(ends)-2]]
	}
	for _, d := range stagedDevs {
		// A device that never reported runs no remote layer.
		var in uint64
		scope := "device/" + d
		if rp := r.view.reports[d]; rp != nil {
			in = rp.Layers[scope]
		}
		var b []byte
		if in > 0 {
			e := r.view.desired[scope]
			if e == nil || e.Version != in {
				return fmt.Errorf("device %s runs device-scope version %d, which the broker no longer retains; push or clear its device scope first; not pushed", d, in)
			}
			b = e.Body
		}
		if e := r.view.desired[scope]; e != nil && e.Version >= r.v {
			return fmt.Errorf("device %s: its device-scope version %d is not below %d; give a higher --version; not pushed", d, e.Version, r.v)
		}
		own[d] = saved{b, in}
	}
	var done []string // devices staged at device scope that applied
	restore := func() error {
		if len(done) == 0 {
			return nil
		}
		want := map[string]string{}
		for _, d := range done {
			scope := "device/" + d
			env, err := fleet.SignConfigBy(r.privs, fleet.Target{Fleet: tg.Fleet, Scope: scope}, r.v+1, own[d].body)
			if err != nil {
				return err
			}
			if err := r.publish(ctx, fleet.Target{Fleet: tg.Fleet, Scope: scope}.Topic(), env); err != nil {
				return err
			}
			want[d] = scope
		}
		fmt.Fprintf(r.s.stderr, "putting back the device scope of %d staged device(s) as version %d\n", len(done), r.v+1)
		r.rep.Restored = r.await(ctx, want, r.v+1, 0, "restore")
		return nil
	}
	start := 0
	for i, end := range ends {
		devs := expected[start:end]
		start = end
		last := i == len(ends)-1
		st := stageReport{Name: names[i], Devices: devs, Limit: r.p.stageLimit(names[i], len(devs))}
		want := map[string]string{}
		if last {
			st.Via = tg.Scope
			env, err := fleet.SignConfigBy(r.privs, tg, r.v, body)
			if err != nil {
				return err
			}
			if err := r.publishScope(ctx, tg, env, raw); err != nil {
				return err
			}
			// Every member answers the scope push, the staged ones too.
			for _, d := range expected {
				want[d] = tg.Scope
			}
		} else {
			st.Via = "device-scope"
			for _, d := range devs {
				rp := r.view.reports[d]
				if rp == nil {
					rp = &fleet.Report{}
				}
				order := scopeOrder(d, r.view.groupsOf(d))
				at := indexOf(order, tg.Scope)
				shadow := func(path string) bool {
					for _, k := range rp.Effective {
						if k.Path == path {
							return indexOf(order, k.Scope) > at
						}
					}
					return false
				}
				b, err := stageBody(own[d].body, body, shadow)
				if err != nil {
					return fmt.Errorf("device %s: %w", d, err)
				}
				dt := fleet.Target{Fleet: tg.Fleet, Scope: "device/" + d}
				env, err := fleet.SignConfigBy(r.privs, dt, r.v, b)
				if err != nil {
					return err
				}
				if err := r.publish(ctx, dt.Topic(), env); err != nil {
					return err
				}
				want[d] = dt.Scope
			}
		}
		fmt.Fprintf(r.s.stderr, "stage %s: version %d to %d device(s) via %s\n", st.Name, r.v, len(want), st.Via)
		res := r.await(ctx, want, r.v, 0, st.Name)
		inStage := map[string]bool{}
		for _, d := range devs {
			inStage[d] = true
		}
		for _, dr := range res {
			if !inStage[dr.Device] {
				// An earlier stage's device answering the scope push.
				r.replace(dr)
				continue
			}
			r.rep.Devices = append(r.rep.Devices, dr)
			if dr.Result != fleet.StatusApplied {
				st.Failed++
			} else if !last {
				done = append(done, dr.Device)
			}
		}
		r.rep.Stages = append(r.rep.Stages, st)
		if !last && st.Failed > st.Limit {
			r.rep.Stopped = true
			r.rep.StopReason = fmt.Sprintf("stage %s: %d of %d device(s) failed, at most %d may", st.Name, st.Failed, len(devs), st.Limit)
			fmt.Fprintf(r.s.stderr, "stopping the rollout: %s; version %d was not published to %s\n", r.rep.StopReason, r.v, tg)
			if err := restore(); err != nil {
				return err
			}
			return errRolloutFailed
		}
	}
	return restore()
}

// judgeResult is a device's answer from its report: what the report says
// when its device signature checks out; untrusted (a failure, whatever the
// report claims) when it does not.
func judgeResult(dev, scope string, version uint64, stage string, j *judged) *deviceResult {
	rp := j.report
	dr := &deviceResult{Device: dev, Result: rp.Status, Scope: scope, Version: version, Running: rp.Running,
		Errors: rp.Errors, Stage: stage, Signature: j.verdict}
	if !trusted(j.verdict) {
		dr.Result = "untrusted"
		dr.Errors = append([]fleet.ReportError{{Error: fmt.Sprintf("report claims %s, NOT BELIEVED: %v",
			strings.ReplaceAll(rp.Status, "_", " "), j.err)}}, rp.Errors...)
	}
	return dr
}

// replace updates a device's result with a later answer (the scope push
// reaching a device staged earlier).
func (r *rollout) replace(dr deviceResult) {
	for i := range r.rep.Devices {
		if r.rep.Devices[i].Device == dr.Device {
			if dr.Result != fleet.StatusApplied {
				r.rep.Devices[i] = dr
			}
			return
		}
	}
	r.rep.Devices = append(r.rep.Devices, dr)
}

func indexOf(order []string, s string) int {
	for i, o := range order {
		if o == s {
			return i
		}
	}
	return -1
}

// await waits for reports of version from the devices in want (device ->
// scope), or from anyone up to count when count > 0, until all answered
// or --timeout; then watches --watch longer for rollbacks.
func (r *rollout) await(ctx context.Context, want map[string]string, version uint64, count int, stage string) []deviceResult {
	total := len(want)
	if count > 0 {
		total = count
	}
	prog := newPushProgress(r.s.stderr, total)
	results := map[string]*deviceResult{}
	take := func() {
		for _, m := range r.col.take() {
			j := r.view.add(m)
			if j == nil || j.report.Version != version {
				continue
			}
			rp := j.report
			dev := deviceOf(m.Topic())
			scope, ok := want[dev]
			if !ok && count == 0 {
				continue
			}
			if !ok {
				scope = r.p.pushedScope
			}
			if rp.Scope != "" && rp.Scope != scope {
				continue
			}
			dr := judgeResult(dev, scope, version, stage, j)
			if prev := results[dev]; prev != nil && prev.Result != "untrusted" && dr.Result == "untrusted" {
				continue // a forgery does not overwrite the device's own answer
			}
			results[dev] = dr
			prog.answer(dr, len(results))
		}
	}
	deadline := time.NewTimer(*r.p.timeout)
	defer deadline.Stop()
wait:
	for {
		take()
		if len(results) >= total && total > 0 {
			break
		}
		select {
		case <-r.col.notify:
		case <-time.After(200 * time.Millisecond):
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if *r.p.watch > 0 && ctx.Err() == nil {
		// A device that applied may still fail its health checks and roll
		// back; its rolled_back report replaces applied.
		end := time.NewTimer(*r.p.watch)
	watching:
		for {
			select {
			case <-r.col.notify:
				take()
			case <-end.C:
				break watching
			case <-ctx.Done():
				break watching
			}
		}
		end.Stop()
	}
	prog.finish()
	var out []deviceResult
	for d, scope := range want {
		if results[d] == nil {
			results[d] = &deviceResult{Device: d, Result: "no_answer", Scope: scope, Version: version, Stage: stage}
			if rp := r.view.reports[d]; rp != nil {
				results[d].Running = rp.Running
			}
		}
	}
	for _, dr := range results {
		out = append(out, *dr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// printRollout prints the stage table (when there is more than minStages
// stages) and the device table of a config or update push.
func printRollout(w io.Writer, stages []stageReport, minStages int, devices []deviceResult) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	if len(stages) > minStages {
		fmt.Fprintln(tw, "STAGE\tVIA\tDEVICES\tFAILED\tLIMIT")
		for _, st := range stages {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", st.Name, st.Via, len(st.Devices), st.Failed, st.Limit)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintln(tw, "DEVICE\tRESULT\tRUNNING\tSIGNATURE\tDETAIL")
	for _, d := range devices {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.Device, strings.ReplaceAll(d.Result, "_", " "), d.Running, dash(d.Signature), reportDetail(d.Errors))
	}
	tw.Flush()
}

func printPushReport(w io.Writer, rep *pushReport) {
	printRollout(w, rep.Stages, 0, rep.Devices)
	fmt.Fprintf(w, "version %d: applied %d, rejected %d, rolled back %d, no answer %d\n", rep.Version,
		countResult(rep.Devices, fleet.StatusApplied), countResult(rep.Devices, fleet.StatusRejected),
		countResult(rep.Devices, fleet.StatusRolledBack), countResult(rep.Devices, "no_answer"))
	if n := countResult(rep.Devices, "untrusted"); n > 0 {
		fmt.Fprintf(w, "%d report(s) failed the device signature check (bad signature, or a key other than the device announces): counted as failures\n", n)
	}
	if rep.Stopped {
		fmt.Fprintf(w, "rollout stopped: %s\n", rep.StopReason)
	}
	if len(rep.Restored) > 0 {
		fmt.Fprintf(w, "device scopes put back (version %d): applied %d of %d\n", rep.Version+1,
			countResult(rep.Restored, fleet.StatusApplied), len(rep.Restored))
	}
}

func reportDetail(errs []fleet.ReportError) string {
	var detail []string
	for _, e := range errs {
		if e.Path != "" {
			detail = append(detail, e.Path+": "+e.Error)
		} else {
			detail = append(detail, e.Error)
		}
	}
	return strings.Join(detail, "; ")
}

func countResult(ds []deviceResult, result string) int {
	n := 0
	for _, d := range ds {
		if d.Result == result {
			n++
		}
	}
	return n
}

// pushVerdict is the exit status: 0 only when every device applied.
func pushVerdict(rep *pushReport) error {
	if rep.Stopped {
		return fmt.Errorf("rollout of version %d stopped: %s", rep.Version, rep.StopReason)
	}
	if len(rep.Devices) == 0 {
		return errors.New("no device answered")
	}
	if bad := len(rep.Devices) - countResult(rep.Devices, fleet.StatusApplied); bad > 0 {
		return fmt.Errorf("%d of %d devices did not apply version %d", bad, len(rep.Devices), rep.Version)
	}
	if n := len(rep.Restored) - countResult(rep.Restored, fleet.StatusApplied); n > 0 {
		return fmt.Errorf("%d staged device(s) did not take back their device scope", n)
	}
	return nil
}
