package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	kestrel "github.com/kestrel-edge/kestrel"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinylib/msgp/msgp"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// ---- keygen ----

func runKeygen(args []string, s stdio) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	out := fs.String("out", "fleet", "write the key pair to `PREFIX`.key (private, 0600) and PREFIX.pub")
	force := fs.Bool("force", false, "overwrite existing files")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl keygen [--out PREFIX] [--force]\n\n"+
			"Makes an Ed25519 fleet signing key. PREFIX.key is PEM PKCS#8, readable by\n"+
			"openssl; keep it off the devices. PREFIX.pub holds the base64 public key\n"+
			"that goes into each device's fleet.trusted_keys. Prints the key id.")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pemKey, err := fleet.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{*out + ".key", pemKey, 0o600},
		{*out + ".pub", []byte(fleet.EncodePublicKey(pub) + "\n"), 0o644},
	} {
		fh, err := os.OpenFile(f.path, flags, f.perm)
		if err != nil {
			return fmt.Errorf("keygen: %w (use --force to overwrite)", err)
		}
		if err := fh.Chmod(f.perm); err == nil {
			_, err = fh.Write(f.data)
		}
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("keygen: %s: %w", f.path, err)
		}
	}
	fmt.Fprintf(s.stdout, "key id %s\nprivate key %s.key (keep it secret)\npublic key %s.pub\n\n[remote]\ntrusted_keys = [%q]\n",
		fleet.KeyID(pub), *out, *out, fleet.EncodePublicKey(pub))
	return nil
}

// signKeyFlags collects repeated --sign-key FILE: a device whose
// remote.config_threshold (or command_threshold) is N needs N keys.
type signKeyFlags []string

func (f *signKeyFlags) String() string     { return strings.Join(*f, ",") }
func (f *signKeyFlags) Set(v string) error { *f = append(*f, v); return nil }

func addSignKeyFlag(fs *flag.FlagSet) *signKeyFlags {
	f := &signKeyFlags{}
	fs.Var(f, "sign-key", "fleet signing key `FILE` from keygen (default $KESTREL_SIGN_KEY); repeat it for a device whose remote.config_threshold or command_threshold asks for several")
	return f
}

// loadSigningKeys reads the --sign-key files (or $KESTREL_SIGN_KEY).
func loadSigningKeys(paths []string) ([]ed25519.PrivateKey, error) {
	if len(paths) == 0 {
		if p := os.Getenv("KESTREL_SIGN_KEY"); p != "" {
			paths = []string{p}
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: --sign-key FILE (or KESTREL_SIGN_KEY) is required", errUsage)
	}
	var keys []ed25519.PrivateKey
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		k, err := fleet.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// keyIDs names signing keys for messages.
func keyIDs(keys []ed25519.PrivateKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = fleet.KeyID(k.Public().(ed25519.PublicKey))
	}
	return strings.Join(ids, "+")
}

// ---- broker connection ----

// fleetSubscribe connects as role (fleetconn.Broker.Connect) and subscribes to filters;
// col gathers what arrives. The caller disconnects cl. A failed
// subscription comes back as a subscribeError, so a command can say which
// step failed.
func fleetSubscribe(ctx context.Context, f *fleetconn.Broker, role string, filters ...string) (cl paho.Client, col *collector, err error) {
	cl, err = f.Connect(ctx, role)
	if err != nil {
		return nil, nil, err
	}
	col = newCollector()
	if err := subscribeAll(ctx, cl, col, filters...); err != nil {
		cl.Disconnect(250)
		return nil, nil, subscribeError{err}
	}
	return cl, col, nil
}

// subscribeError is a subscription that failed after the connect worked.
// It reads as its cause.
type subscribeError struct{ error }

func (e subscribeError) Unwrap() error { return e.error }

func fleetCtx(s stdio) context.Context {
	if s.ctx == nil {
		return context.Background()
	}
	return s.ctx
}

// collector gathers messages from subscriptions on paho's goroutine.
type collector struct {
	mu     sync.Mutex
	msgs   []paho.Message
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) handler(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *collector) take() []paho.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.msgs
	c.msgs = nil
	return out
}

// settle waits until no message has arrived for quiet, or max has passed:
// how long the retained messages take to arrive.
func (c *collector) settle(ctx context.Context, quiet, max time.Duration) {
	end := time.NewTimer(max)
	defer end.Stop()
	for {
		q := time.NewTimer(quiet)
		select {
		case <-c.notify:
			q.Stop()
		case <-q.C:
			return
		case <-end.C:
			q.Stop()
			return
		case <-ctx.Done():
			q.Stop()
			return
		}
	}
}

func subscribeAll(ctx context.Context, cl paho.Client, c *collector, filters ...string) error {
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	return fleetconn.Wait(ctx, cl.SubscribeMultiple(m, c.handler), 10*time.Second)
}

// deviceOf returns the device level of kestrel/v1/{fleet}/{device}/...
func deviceOf(topic string) string {
	parts := strings.Split(topic, "/")
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

// ---- config push / get ----

const fleetConfigUsage = `usage:
  kestrelctl config push --broker URL --fleet F (--device D | --group G | --all) --sign-key KEY [flags] FILE
  kestrelctl config clear --broker URL --fleet F (--device D | --group G | --all) --sign-key KEY [flags]
  kestrelctl config get  --broker URL --fleet F (--device D | --group G | --all) [--effective]

push signs FILE (a partial TOML config, laid over each device's own), publishes
it retained, waits for the devices' reports with a progress bar and ends with
a table of applied, rejected, rolled back and no answer. It exits 1 unless
every expected device applied it. clear pushes a signed, versioned empty
config to the scope, so that scope sets nothing and the other scopes'
keys stay. get shows the desired configs and the devices' reports; with
--effective and --device, the device's running config key by key with
the scope and version each value came from. Run either with -h for its flags; see docs/config.md.`

func runConfig(args []string, s stdio) error {
	if len(args) == 0 {
		fmt.Fprintln(s.stderr, fleetConfigUsage)
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	switch args[0] {
	case "push":
		return configPush(args[1:], s, false)
	case "clear":
		return configPush(args[1:], s, true)
	case "get":
		return configGet(args[1:], s)
	case "-h", "--help", "help":
		fmt.Fprintln(s.stdout, fleetConfigUsage)
		return nil
	}
	fmt.Fprintln(s.stderr, fleetConfigUsage)
	return fmt.Errorf("%w: unknown config subcommand %q", errUsage, args[0])
}

type targetFlags struct {
	device, group *string
	all           *bool
}

func addTargetFlags(fs *flag.FlagSet) targetFlags {
	return targetFlags{
		device: fs.String("device", "", "one device"),
		group:  fs.String("group", "", "a group (devices with it in device.groups)"),
		all:    fs.Bool("all", false, "the whole fleet"),
	}
}

func (t targetFlags) target(fleetID string) (fleet.Target, error) {
	n := 0
	var tg fleet.Target
	if *t.device != "" {
		n++
		tg = fleet.Device(fleetID, *t.device)
	}
	if *t.group != "" {
		n++
		tg = fleet.Group(fleetID, *t.group)
	}
	if *t.all {
		n++
		tg = fleet.AllDevices(fleetID)
	}
	if n != 1 {
		return fleet.Target{}, fmt.Errorf("%w: give exactly one of --device, --group, --all", errUsage)
	}
	return tg, nil
}

// pushResult is one device's answer to a push.
type pushResult struct {
	status  string // applied, rejected, rolled_back, "" = no answer
	running uint64
	errs    []fleet.ReportError
	topic   string
	sig     *fleet.DeviceSignature // the report's device signature (nil: unsigned)
}

func configPush(args []string, s stdio, clear bool) error {
	name := "config push"
	if clear {
		name = "config clear"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	tf := addTargetFlags(fs)
	signKey := addSignKeyFlag(fs)
	version := fs.Uint64("version", 0, "config version; must exceed every version the devices run (default: now, in Unix seconds)")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for reports")
	discover := fs.Duration("discover", 2*time.Second, "how long to collect retained state to learn which devices to expect")
	expect := fs.Int("expect", 0, "wait for this many reports (default: the devices known from retained state)")
	devices := fs.String("devices", "", "comma-separated device ids to expect (overrides discovery)")
	watch := fs.Duration("watch", 0, "after every device answered, keep watching this long for connectivity rollbacks (see fleet.rollback_after)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl config push --broker URL --fleet F (--device D | --group G | --all) --sign-key KEY [flags] FILE\n\n"+
			"Validates FILE locally, signs it, publishes it retained on the target's\n"+
			"config/desired topic, and waits for each device's config/reported message.\n"+
			"Devices to expect come from the retained state and report messages (for a\n"+
			"group: devices whose last report lists the group), or --devices/--expect.")
		fs.PrintDefaults()
	}
	if clear {
		fs.Usage = func() {
			fmt.Fprintln(s.stderr, "usage: kestrelctl config clear --broker URL --fleet F (--device D | --group G | --all) --sign-key KEY [flags]\n\n"+
				"Signs and publishes an empty config for the scope, with a new version: the\n"+
				"scope then sets no key, and what the other scopes set stays. Waits for the\n"+
				"devices' reports like push.")
			fs.PrintDefaults()
		}
	}
	var file string
	var body []byte
	if clear {
		if help, err := subcmd.Parse(fs, args); help || err != nil {
			return err
		}
		if fs.NArg() != 0 {
			return fmt.Errorf("%w: config clear takes no FILE", errUsage)
		}
		file, body = "(clear)", []byte{}
	} else {
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
	}
	if err := bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	tg, err := tf.target(bf.Fleet)
	if err != nil {
		return err
	}
	if !clear {
		if body, err = os.ReadFile(file); err != nil {
			return err
		}
	}
	// Catch what every device would reject before it goes out.
	base := config.Defaults()
	base.Device.ID, base.Device.Fleet = "check", bf.Fleet
	if _, _, err := config.Overlay(base, body); err != nil {
		for _, fe := range config.FieldErrors(err) {
			fmt.Fprintf(s.stderr, "%s: %v\n", file, fe)
		}
		return fmt.Errorf("%s would be rejected; not pushed", file)
	}
	privs, err := loadSigningKeys(*signKey)
	if err != nil {
		return err
	}
	v := *version
	if v == 0 {
		v = uint64(time.Now().Unix())
	}
	env, err := fleet.SignConfigBy(privs, tg, v, body)
	if err != nil {
		return err
	}

	ctx := fleetCtx(s)
	prefix := fleet.Prefix(bf.Fleet)
	cl, col, err := fleetSubscribe(ctx, bf, "push", prefix+"+/config/reported", prefix+"+/state")
	if errors.As(err, new(subscribeError)) {
		return fmt.Errorf("subscribe: %w", err)
	} else if err != nil {
		return err
	}
	defer cl.Disconnect(250)

	// Learn who should answer from what is retained now.
	expected := map[string]bool{}
	results := map[string]*pushResult{}
	lastRunning := map[string]uint64{}
	if *devices != "" {
		for _, d := range strings.Split(*devices, ",") {
			if d = strings.TrimSpace(d); d != "" {
				expected[d] = true
			}
		}
	} else if *tf.device != "" {
		expected[*tf.device] = true
	}
	discovering := len(expected) == 0
	if discovering {
		col.settle(ctx, 300*time.Millisecond, *discover)
	}
	keys := deviceKeys{}
	for _, m := range col.take() {
		keys.observe(m.Topic(), m.Payload())
		dev := deviceOf(m.Topic())
		if dev == "" || strings.HasPrefix(dev, "_") {
			continue
		}
		if strings.HasSuffix(m.Topic(), "/config/reported") {
			if r, err := fleet.DecodeReport(m.Payload()); err == nil {
				lastRunning[dev] = r.Running
				if discovering && (*tf.all || slices.Contains(r.Groups, *tf.group)) {
					expected[dev] = true
				}
			}
		} else if discovering && *tf.all && len(m.Payload()) > 0 {
			expected[dev] = true
		}
	}
	want := len(expected)
	if *expect > 0 {
		want = *expect
	}
	if want == 0 && discovering {
		// Nobody to wait for: a typo in a group name, or a fleet not yet
		// online. Say so rather than publish into silence.
		what := "the fleet"
		if *tf.group != "" {
			what = "group " + *tf.group
		}
		return fmt.Errorf("no device known in %s (from retained state and reports); not pushed (use --devices or --expect to push anyway)", what)
	}

	if err := fleetconn.Wait(ctx, cl.Publish(tg.Topic(), 1, true, env), 15*time.Second); err != nil {
		return fmt.Errorf("publish %s: %w", tg.Topic(), err)
	}
	fmt.Fprintf(s.stderr, "pushed version %d to %s (%s), %d bytes, key %s; waiting for %d device(s)\n",
		v, tg, tg.Topic(), len(env), keyIDs(privs), want)

	deadline := time.NewTimer(*timeout)
	defer deadline.Stop()
	prog := &progress{w: s.stderr, total: want}
	for {
		for _, m := range col.take() {
			if keys.observe(m.Topic(), m.Payload()) || !strings.HasSuffix(m.Topic(), "/config/reported") {
				continue
			}
			r, err := fleet.DecodeReport(m.Payload())
			if err != nil || r.Version != v {
				continue
			}
			dev := deviceOf(m.Topic())
			results[dev] = &pushResult{status: r.Status, running: r.Running, errs: r.Errors, topic: m.Topic(), sig: r.Signature}
			if *expect == 0 && *devices == "" {
				expected[dev] = true // answered though not known in advance
			}
		}
		if *expect == 0 {
			want = len(expected)
		}
		prog.total = want
		prog.draw(results)
		if want > 0 && countDone(results, expected, *expect > 0) >= want {
			break
		}
		select {
		case <-col.notify:
		case <-time.After(200 * time.Millisecond):
		case <-deadline.C:
			goto done
		case <-ctx.Done():
			goto done
		}
	}
done:
	if *watch > 0 && ctx.Err() == nil {
		// A device that applied the config may still lose its broker and
		// roll back; its rolled_back report replaces applied.
		end := time.After(*watch)
	watching:
		for {
			select {
			case <-col.notify:
				for _, m := range col.take() {
					if keys.observe(m.Topic(), m.Payload()) {
						continue
					}
					if r, err := fleet.DecodeReport(m.Payload()); err == nil && r.Version == v && strings.HasSuffix(m.Topic(), "/config/reported") {
						results[deviceOf(m.Topic())] = &pushResult{status: r.Status, running: r.Running, errs: r.Errors, topic: m.Topic(), sig: r.Signature}
					}
				}
				prog.draw(results)
			case <-end:
				break watching
			case <-ctx.Done():
				break watching
			}
		}
	}
	prog.finish()
	return pushTable(s.stdout, v, expected, results, lastRunning, keys)
}

// countDone counts final answers from expected devices (or from anyone
// when only a count is expected). Applied may still turn into rolled_back,
// but the push has done its part once the device applied it.
func countDone(results map[string]*pushResult, expected map[string]bool, anyone bool) int {
	n := 0
	for dev, r := range results {
		if r.status != "" && (anyone || expected[dev]) {
			n++
		}
	}
	return n
}

// progress draws a one-line bar on stderr.
type progress struct {
	w     io.Writer
	total int
	drawn bool
	last  string
}

func (p *progress) draw(results map[string]*pushResult) {
	var ap, rj, rb int
	for _, r := range results {
		switch r.status {
		case fleet.StatusApplied:
			ap++
		case fleet.StatusRejected:
			rj++
		case fleet.StatusRolledBack:
			rb++
		}
	}
	done := ap + rj + rb
	const width = 30
	fill := width
	if p.total > 0 {
		fill = min(width, done*width/p.total)
	}
	line := fmt.Sprintf("\r[%s%s] %d/%d  applied %d  rejected %d  rolled back %d",
		strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, p.total, ap, rj, rb)
	if line != p.last {
		fmt.Fprint(p.w, line)
		p.last, p.drawn = line, true
	}
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func pushTable(w io.Writer, v uint64, expected map[string]bool, results map[string]*pushResult, lastRunning map[string]uint64, keys deviceKeys) error {
	devs := map[string]bool{}
	for d := range expected {
		devs[d] = true
	}
	for d := range results {
		devs[d] = true
	}
	names := make([]string, 0, len(devs))
	for d := range devs {
		names = append(names, d)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tRESULT\tRUNNING\tSIGNATURE\tDETAIL")
	counts := map[string]int{}
	untrusted := 0
	for _, d := range names {
		r := results[d]
		if r == nil {
			counts["no answer"]++
			run := "-"
			if v, ok := lastRunning[d]; ok {
				run = fmt.Sprint(v)
			}
			fmt.Fprintf(tw, "%s\tno answer\t%s\t-\t\n", d, run)
			continue
		}
		verdict, verr := keys.verdict(r.topic, r.sig)
		status := strings.ReplaceAll(r.status, "_", " ")
		var detail []string
		if !trusted(verdict) {
			// A report that does not verify may be forged: it counts as
			// no answer, whatever it claims.
			untrusted++
			counts["no answer"]++
			detail = append(detail, fmt.Sprintf("report claims %s, NOT BELIEVED: %v", status, verr))
			status = "untrusted"
		} else {
			counts[status]++
		}
		for _, e := range r.errs {
			if e.Path != "" {
				detail = append(detail, e.Path+": "+e.Error)
			} else {
				detail = append(detail, e.Error)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d, status, r.running, verdict, strings.Join(detail, "; "))
	}
	tw.Flush()
	fmt.Fprintf(w, "version %d: applied %d, rejected %d, rolled back %d, no answer %d\n",
		v, counts["applied"], counts["rejected"], counts["rolled back"], counts["no answer"])
	if untrusted > 0 {
		fmt.Fprintf(w, "%d report(s) failed the device signature check (bad signature, or a key other than the device announces)\n", untrusted)
	}
	if bad := len(names) - counts["applied"]; bad > 0 || len(names) == 0 {
		if len(names) == 0 {
			return errors.New("no device answered")
		}
		return fmt.Errorf("%d of %d devices did not apply version %d", bad, len(names), v)
	}
	return nil
}

func configGet(args []string, s stdio) error {
	fs := flag.NewFlagSet("config get", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	tf := addTargetFlags(fs)
	pubFile := fs.String("pub", "", "verify signatures with this public key file (keygen's .pub)")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for retained messages")
	effective := fs.Bool("effective", false, "with --device: print the device's running config, each key with the scope and version it came from")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl config get --broker URL --fleet F (--device D | --group G | --all) [--pub FILE]\n\n"+
			"Prints the retained desired config for the target (for a device also the\n"+
			"group and fleet-wide ones) and the devices' last reports.")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if err := bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	tg, err := tf.target(bf.Fleet)
	if err != nil {
		return err
	}
	var kr fleet.Keyring
	if *pubFile != "" {
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return err
		}
		if kr, err = fleet.NewKeyring([]string{strings.TrimSpace(string(b))}); err != nil {
			return err
		}
	}
	ctx := fleetCtx(s)
	prefix := fleet.Prefix(bf.Fleet)
	filters := []string{prefix + "+/config/reported", prefix + "+/" + fleet.ChannelState, fleet.AllDevices(bf.Fleet).Topic(), prefix + "_group/+/config/desired"}
	if *tf.device != "" {
		filters = append(filters, tg.Topic())
	}
	cl, col, err := fleetSubscribe(ctx, bf, "get", filters...)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 300*time.Millisecond, *wait)
	desired := map[string][]byte{}
	reports := map[string]*fleet.Report{}
	reportTopic := map[string]string{}
	keys := deviceKeys{}
	for _, m := range col.take() {
		if keys.observe(m.Topic(), m.Payload()) {
			continue
		}
		if strings.HasSuffix(m.Topic(), "/config/desired") {
			desired[m.Topic()] = m.Payload()
			continue
		}
		if r, err := fleet.DecodeReport(m.Payload()); err == nil {
			reports[deviceOf(m.Topic())] = r
			reportTopic[deviceOf(m.Topic())] = m.Topic()
		}
	}
	verdictOf := func(dev string) string {
		v, err := keys.verdict(reportTopic[dev], reports[dev].Signature)
		if !trusted(v) {
			return fmt.Sprintf("%s (NOT BELIEVED: %v)", v, err)
		}
		return v
	}
	if *effective {
		if *tf.device == "" {
			return fmt.Errorf("%w: --effective needs --device", errUsage)
		}
		r := reports[*tf.device]
		if r == nil || len(r.Effective) == 0 {
			return fmt.Errorf("no report with the effective config from %s", *tf.device)
		}
		return printEffective(s.stdout, r, verdictOf(*tf.device))
	}
	// Which desired topics apply to the target.
	var topics []string
	switch {
	case *tf.device != "":
		topics = append(topics, tg.Topic())
		if r := reports[*tf.device]; r != nil {
			for _, g := range r.Groups {
				topics = append(topics, fleet.Group(bf.Fleet, g).Topic())
			}
		}
		topics = append(topics, fleet.AllDevices(bf.Fleet).Topic())
	default:
		topics = append(topics, tg.Topic())
	}
	for _, topic := range topics {
		p, ok := desired[topic]
		if !ok || len(p) == 0 {
			fmt.Fprintf(s.stdout, "# %s: none\n\n", topic)
			continue
		}
		e, err := fleet.DecodeConfig(p)
		if err != nil {
			fmt.Fprintf(s.stdout, "# %s: unreadable: %v\n\n", topic, err)
			continue
		}
		sig := "unsigned"
		if e.KeyID != "" {
			sig = "signed by key " + e.KeyID
			if kr != nil {
				if err := kr.VerifyConfig(e, true); err != nil {
					sig += " (NOT VERIFIED: " + err.Error() + ")"
				} else {
					sig += " (verified)"
				}
			}
		}
		fmt.Fprintf(s.stdout, "# %s\n# version %d, target %s, issued %s, %s\n%s\n", topic, e.Version, e.Target(),
			time.UnixMilli(e.Issued).UTC().Format(time.RFC3339), sig, strings.TrimRight(string(e.Body), "\n"))
		fmt.Fprintln(s.stdout)
	}
	var names []string
	for d, r := range reports {
		switch {
		case *tf.device != "" && d != *tf.device:
		case *tf.group != "" && !slices.Contains(r.Groups, *tf.group):
		default:
			names = append(names, d)
		}
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(s.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tRUNNING\tLAST ATTEMPT\tRESULT\tWHEN\tSIGNATURE\tDETAIL")
	for _, d := range names {
		r := reports[d]
		var detail []string
		for _, e := range r.Errors {
			if e.Path != "" {
				detail = append(detail, e.Path+": "+e.Error)
			} else {
				detail = append(detail, e.Error)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", d, r.Running, r.Version, r.Status,
			time.UnixMilli(r.Time).UTC().Format(time.RFC3339), verdictOf(d), strings.Join(detail, "; "))
	}
	return tw.Flush()
}

// printEffective prints a device's running config key by key with its
// origin: the remote scope and version that set it, or local.
func printEffective(w io.Writer, r *fleet.Report, verdict string) error {
	var layers []string
	for sc, v := range r.Layers {
		layers = append(layers, fmt.Sprintf("%s=%d", sc, v))
	}
	sort.Strings(layers)
	fmt.Fprintf(w, "# %s running version %d; layers: %s; device signature: %s\n", r.Device, r.Running, strings.Join(layers, " "), verdict)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tSCOPE\tVERSION")
	for _, k := range r.Effective {
		v := "-"
		if k.Version != 0 {
			v = fmt.Sprint(k.Version)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Path, k.Value, k.Scope, v)
	}
	return tw.Flush()
}

// ---- status ----

func runStatus(args []string, s stdio) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	device := fs.String("device", "", "only this device")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for retained messages")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl status --broker URL --fleet F [--device D]\n\n"+
			"A table of the fleet from the retained state and config/reported messages:\n"+
			"online, last seen, battery, spool depth, radio, GPS and config version.")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if err := bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ctx := fleetCtx(s)
	prefix := fleet.Prefix(bf.Fleet)
	dev := "+"
	if *device != "" {
		dev = *device
	}
	cl, col, err := fleetSubscribe(ctx, bf, "status", prefix+dev+"/state", prefix+dev+"/config/reported")
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 300*time.Millisecond, *wait)
	states := map[string]map[string]any{}
	reps := map[string]*fleet.Report{}
	for _, m := range col.take() {
		d := deviceOf(m.Topic())
		if strings.HasSuffix(m.Topic(), "/state") {
			if st, err := decodeStateMap(m.Payload()); err == nil {
				states[d] = st
			} else {
				fmt.Fprintf(s.stderr, "%s: unreadable state: %v\n", d, err)
			}
		} else if r, err := fleet.DecodeReport(m.Payload()); err == nil {
			reps[d] = r
		}
	}
	if len(states) == 0 && len(reps) == 0 {
		return fmt.Errorf("no retained state under %s", prefix)
	}
	names := make([]string, 0, len(states))
	for d := range states {
		names = append(names, d)
	}
	for d := range reps {
		if states[d] == nil {
			names = append(names, d)
		}
	}
	sort.Strings(names)
	now := time.Now()
	tw := tabwriter.NewWriter(s.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tONLINE\tLAST SEEN\tBATTERY\tSPOOL\tRADIO\tGPS\tCONFIG")
	online := 0
	for _, d := range names {
		st := states[d]
		on := "?"
		if b, ok := st["online"].(bool); ok {
			on = map[bool]string{true: "yes", false: "no"}[b]
			if b {
				online++
			}
			if p, _ := st["plaintext"].(bool); p {
				on += " (plaintext)"
			}
		}
		seen := "-"
		if ms, ok := asInt(st["time"]); ok && ms > 0 {
			seen = ago(now.Sub(time.UnixMilli(ms)))
		}
		batt := "-"
		if v, ok := asInt(st["battery"]); ok {
			batt = fmt.Sprintf("%d%%", v)
			if bs, _ := st["battery_status"].(string); bs != "" {
				batt += " " + strings.ToLower(bs)
			}
		}
		spool := "-"
		if v, ok := asInt(st["spool_records"]); ok {
			spool = fmt.Sprint(v)
			if b, ok := asInt(st["spool_bytes"]); ok {
				spool += " (" + humanBytes(b) + ")"
			}
			if h, _ := st["spool_health"].(string); h != "" && h != "ok" {
				spool += " " + h
			}
		}
		radio := "-"
		if p, _ := st["radio_profile"].(string); p != "" {
			radio = p
			if reg, ok := asInt(st["radio_registered"]); ok {
				radio += " " + regName(reg)
			}
			if rssi, ok := asInt(st["radio_rssi"]); ok && rssi != 0 {
				radio += fmt.Sprintf(" %d dBm", rssi)
			}
		}
		gps := "-"
		if g, _ := st["gps"].(string); g != "" {
			gps = g
		}
		cfg := "-"
		if v, ok := asInt(st["config_version"]); ok {
			cfg = fmt.Sprint(v)
		}
		if r := reps[d]; r != nil {
			// The report is newer than a state message published before
			// the last config change.
			cfg = fmt.Sprint(r.Running)
			if r.Status != fleet.StatusApplied {
				cfg += fmt.Sprintf(" (v%d %s)", r.Version, strings.ReplaceAll(r.Status, "_", " "))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d, on, seen, batt, spool, radio, gps, cfg)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "%d devices, %d online\n", len(names), online)
	return nil
}

// decodeStateMap reads the retained state message: a MessagePack map
// (transport/mqtt), or JSON from other tools.
func decodeStateMap(p []byte) (map[string]any, error) {
	if v, rest, err := msgp.ReadIntfBytes(p); err == nil && len(rest) == 0 {
		if m, ok := v.(map[string]any); ok {
			return m, nil
		}
	}
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, errors.New("neither a MessagePack nor a JSON map")
	}
	return m, nil
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case uint64:
		return int64(x), true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case float64:
		return int64(x), true
	}
	return 0, false
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func humanBytes(b int64) string {
	switch {
	case b < 1<<10:
		return fmt.Sprintf("%d B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func regName(r int64) string {
	switch r {
	case 0:
		return "unregistered"
	case 1:
		return "home"
	case 2:
		return "searching"
	case 3:
		return "denied"
	case 5:
		return "roaming"
	}
	if r >= 0 && r <= 255 {
		return strings.ReplaceAll(kestrel.RegState(r).String(), "_", " ")
	}
	return "unknown"
}

// ---- cmd ----

func runCmd(args []string, s stdio) error {
	fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	device := fs.String("device", "", "target device (required)")
	signKey := addSignKeyFlag(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the reply")
	id := fs.String("id", "", "request id (default: random)")
	fs.Usage = func() {
		fmt.Fprintln(s.stderr, "usage: kestrelctl cmd --broker URL --fleet F --device D --sign-key KEY NAME [key=value]...\n\n"+
			"Sends a signed command and prints the device's reply as JSON; exits 1 unless\n"+
			"the reply's status is ok. Commands: locate, flush, status, selftest, restart,\n"+
			"privacy on|off|default.")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if err := bf.Check(true); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *device == "" || fs.NArg() == 0 {
		return fmt.Errorf("%w: --device and a command NAME are required", errUsage)
	}
	name := fs.Arg(0)
	cmdArgs := map[string]string{}
	for _, a := range fs.Args()[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			if name == "privacy" && len(cmdArgs) == 0 {
				k, v = "mode", a // privacy on|off|default
			} else {
				return fmt.Errorf("%w: argument %q: want key=value", errUsage, a)
			}
		}
		cmdArgs[k] = v
	}
	privs, err := loadSigningKeys(*signKey)
	if err != nil {
		return err
	}
	rid := *id
	if rid == "" {
		rid = fleetconn.RandomID(8)
	}
	replyCh := "reply/ctl-" + fleetconn.RandomID(4)
	payload, err := fleet.SignCommandBy(privs, fleet.Command{Fleet: bf.Fleet, Device: *device, ID: rid, Name: name, Args: cmdArgs, Reply: replyCh})
	if err != nil {
		return err
	}
	ctx := fleetCtx(s)
	prefix := fleet.Prefix(bf.Fleet) + *device + "/"
	// The default reply channel too: a command the device cannot parse is
	// answered there.
	// The state topic too: its retained copy announces the device key
	// the reply must be signed with.
	cl, col, err := fleetSubscribe(ctx, bf, "cmd", prefix+replyCh, prefix+"reply", prefix+fleet.ChannelState)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 100*time.Millisecond, time.Second) // the retained state first
	if err := fleetconn.Wait(ctx, cl.Publish(prefix+"cmd", 1, false, payload), 15*time.Second); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	deadline := time.NewTimer(*timeout)
	defer deadline.Stop()
	keys := deviceKeys{}
	for {
		for _, m := range col.take() {
			if keys.observe(m.Topic(), m.Payload()) {
				continue
			}
			r, err := fleet.DecodeReply(m.Payload())
			if err != nil || r.ID != rid {
				continue
			}
			verdict, verr := keys.verdict(m.Topic(), r.Signature)
			out := struct {
				*fleet.Reply
				Signature string `json:"signature"`
			}{r, verdict}
			b, _ := json.Marshal(&out)
			fmt.Fprintln(s.stdout, string(b))
			if !trusted(verdict) {
				return fmt.Errorf("%s: the reply's device signature does not check (%s): %v", name, verdict, verr)
			}
			if r.Status != fleet.ReplyOK {
				return fmt.Errorf("%s %s: %s", name, r.Status, r.Error)
			}
			return nil
		}
		select {
		case <-col.notify:
		case <-deadline.C:
			return fmt.Errorf("no reply from %s within %s (request id %s)", *device, *timeout, rid)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
