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
	fs.Var(f, "sign-key", "fleet signing key `FILE` from keygen (default $KESTREL_SIGNING_KEY); repeat it for a device whose remote.config_threshold or command_threshold asks for several")
	fs.Var(f, "signing-key", "the same as --sign-key")
	return f
}

// loadSigningKeys reads the --sign-key files (or $KESTREL_SIGNING_KEY, or
// the older $KESTREL_SIGN_KEY).
func loadSigningKeys(paths []string) ([]ed25519.PrivateKey, error) {
	for _, env := range []string{"KESTREL_SIGNING_KEY", "KESTREL_SIGN_KEY"} {
		if p := os.Getenv(env); len(paths) == 0 && p != "" {
			paths = []string{p}
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: --sign-key FILE (or $KESTREL_SIGNING_KEY) is required", errUsage)
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
  kestrelctl config validate [--json] FILE
  kestrelctl config push     (--device D | --group G | --all) [--dry-run] [--canary N] [--stages LIST] [flags] FILE
  kestrelctl config clear    (--device D | --group G | --all) [flags]
  kestrelctl config rollback (--device D | --group G | --all) [flags]
  kestrelctl config get      (--device D | --group G | --all) [--effective] [--pub FILE] [--json]

validate lists every problem a remote config has, offline. push signs FILE
(a partial TOML config, laid over each device's own at its scope),
publishes it retained, waits for the devices' reports and ends with a table
of applied, rejected, rolled back and no answer; it exits 1 unless every
expected device applied it. --dry-run shows each device's change key by
key and publishes nothing; --canary and --stages roll a group or fleet push
out in stages and stop on failures. clear pushes a signed, versioned empty
config to the scope. rollback pushes the scope's previous config again as a
new version. get shows the desired configs and the devices' reports; with
--effective and --device, the running config key by key with the scope
and version each value came from. Broker, fleet and key come from flags or
$KESTREL_BROKER, $KESTREL_FLEET, $KESTREL_CA, $KESTREL_CERT, $KESTREL_KEY,
$KESTREL_SIGNING_KEY. Run each with -h for its flags; see docs/config.md.`

func runConfig(args []string, s stdio) error {
	if len(args) == 0 {
		fmt.Fprintln(s.stderr, fleetConfigUsage)
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	switch args[0] {
	case "push":
		return runPush(args[1:], s, modePush)
	case "clear":
		return runPush(args[1:], s, modeClear)
	case "rollback":
		return runPush(args[1:], s, modeRollback)
	case "validate":
		return configValidate(args[1:], s)
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

func configGet(args []string, s stdio) error {
	fs := flag.NewFlagSet("config get", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	bf := fleetconn.AddFlags(fs)
	tf := addTargetFlags(fs)
	pubFile := fs.String("pub", "", "verify signatures with this public key file (keygen's .pub)")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for retained messages")
	asJSON := addJSONFlag(fs)
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
	entryOf := func(dev string) reportEntry {
		v, err := keys.verdict(reportTopic[dev], reports[dev].Signature)
		return newReportEntry(reports[dev], v, err)
	}
	verdictOf := func(dev string) string { return entryOf(dev).shown() }
	if *effective {
		if *tf.device == "" {
			return fmt.Errorf("%w: --effective needs --device", errUsage)
		}
		r := reports[*tf.device]
		if r == nil || len(r.Effective) == 0 {
			return fmt.Errorf("no report with the effective config from %s", *tf.device)
		}
		if *asJSON {
			return writeJSON(s.stdout, entryOf(*tf.device))
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
	out := getReport{Desired: []desiredConfig{}, Reports: []reportEntry{}}
	for _, topic := range topics {
		dc := desiredConfig{Topic: topic}
		p, ok := desired[topic]
		if !ok || len(p) == 0 {
			dc.Signature = "none"
			out.Desired = append(out.Desired, dc)
			continue
		}
		e, err := fleet.DecodeConfig(p)
		if err != nil {
			dc.Signature, dc.Error = "unreadable", err.Error()
			out.Desired = append(out.Desired, dc)
			continue
		}
		dc.Version, dc.Target, dc.KeyID, dc.Body = e.Version, e.Target().String(), e.KeyID, string(e.Body)
		dc.Issued = time.UnixMilli(e.Issued).UTC()
		dc.Signature = "unsigned"
		if e.KeyID != "" {
			dc.Signature = "signed"
			if kr != nil {
				if err := kr.VerifyConfig(e, true); err != nil {
					dc.Signature, dc.Error = "not verified", err.Error()
				} else {
					dc.Signature = "verified"
				}
			}
		}
		out.Desired = append(out.Desired, dc)
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
	for _, d := range names {
		out.Reports = append(out.Reports, entryOf(d))
	}
	if *asJSON {
		return writeJSON(s.stdout, out)
	}
	for _, dc := range out.Desired {
		switch dc.Signature {
		case "none":
			fmt.Fprintf(s.stdout, "# %s: none\n\n", dc.Topic)
			continue
		case "unreadable":
			fmt.Fprintf(s.stdout, "# %s: unreadable: %s\n\n", dc.Topic, dc.Error)
			continue
		}
		sig := "unsigned"
		if dc.KeyID != "" {
			sig = "signed by key " + dc.KeyID
			switch dc.Signature {
			case "verified":
				sig += " (verified)"
			case "not verified":
				sig += " (NOT VERIFIED: " + dc.Error + ")"
			}
		}
		fmt.Fprintf(s.stdout, "# %s\n# version %d, target %s, issued %s, %s\n%s\n", dc.Topic, dc.Version, dc.Target,
			dc.Issued.Format(time.RFC3339), sig, strings.TrimRight(dc.Body, "\n"))
		fmt.Fprintln(s.stdout)
	}
	tw := tabwriter.NewWriter(s.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tRUNNING\tLAST ATTEMPT\tRESULT\tWHEN\tSIGNATURE\tDETAIL")
	for _, r := range out.Reports {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", r.Device, r.Running, r.Version, r.Status,
			time.UnixMilli(r.Time).UTC().Format(time.RFC3339), r.shown(), reportDetail(r.Errors))
	}
	return tw.Flush()
}

// getReport is config get --json: the desired configs that reach the
// target (device, its groups, fleet) and the devices' last reports.
type getReport struct {
	Desired []desiredConfig `json:"desired"`
	Reports []reportEntry   `json:"reports"`
}

// reportEntry is a device's config report as config get --json prints
// it: the report's fields, and its device signature's verdict (see
// transport/fleet.Verdict); a report that is not believed says why.
type reportEntry struct {
	*fleet.Report
	Signature      string `json:"signature"`
	SignatureError string `json:"signature_error,omitempty"`
	Believed       bool   `json:"believed"`
}

func newReportEntry(r *fleet.Report, verdict string, err error) reportEntry {
	e := reportEntry{Report: r, Signature: verdict, Believed: trusted(verdict)}
	if err != nil {
		e.SignatureError = err.Error()
	}
	return e
}

// shown is the verdict as the tables print it.
func (e reportEntry) shown() string {
	if !e.Believed {
		return fmt.Sprintf("%s (NOT BELIEVED: %s)", e.Signature, e.SignatureError)
	}
	return e.Signature
}

// desiredConfig is one retained desired config. Signature is none (no
// config retained), unreadable, unsigned, signed (not checked: no --pub),
// verified or not verified (Error says why).
type desiredConfig struct {
	Topic     string    `json:"topic"`
	Target    string    `json:"target,omitempty"`
	Version   uint64    `json:"version,omitempty"`
	Issued    time.Time `json:"issued,omitzero"`
	KeyID     string    `json:"kid,omitempty"`
	Signature string    `json:"signature"`
	Error     string    `json:"error,omitempty"`
	Body      string    `json:"body,omitempty"`
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
	asJSON := addJSONFlag(fs)
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
			// The reply is JSON either way: one line, or indented with --json.
			if *asJSON {
				if err := writeJSON(s.stdout, &out); err != nil {
					return err
				}
			} else {
				b, _ := json.Marshal(&out)
				fmt.Fprintln(s.stdout, string(b))
			}
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
