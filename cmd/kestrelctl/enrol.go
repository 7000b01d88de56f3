package main

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Device enrolment (docs/evidence.md, "Enrolment"): pin a device's public
// key in the platform database, list and show what is pinned and what
// the devices announce.
func init() {
	commands.Commands["device"] = subcmd.Command[stdio]{Summary: "device enrol|list|show --db URL ...: pin device keys in the platform database", Run: runDevice}
}

func runDevice(args []string, s stdio) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: usage: kestrelctl device enrol|list|show --db URL ...", errUsage)
	}
	switch args[0] {
	case "enrol", "enroll":
		return runEnrol(args[1:], s)
	case "list":
		return runDeviceList(args[1:], s, false)
	case "show":
		return runDeviceList(args[1:], s, true)
	}
	return fmt.Errorf("%w: kestrelctl device %s: want enrol, list or show", errUsage, args[0])
}

func runEnrol(args []string, s stdio) error {
	fs := flag.NewFlagSet("device enrol", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "platform database: postgres://... or sqlite:FILE (required)")
	// The broker flags of the fleet commands, but --key is the device key
	// here: the TLS client key is --client-key.
	bf := &fleetconn.Broker{}
	fs.StringVar(&bf.URL, "broker", os.Getenv(fleetconn.BrokerEnv), "broker `URL`, to read the key from the device's retained state message (default $"+fleetconn.BrokerEnv+")")
	fs.StringVar(&bf.CA, "ca", os.Getenv(fleetconn.CAEnv), "CA bundle `FILE` (PEM) for a tls:// broker (default $"+fleetconn.CAEnv+")")
	fs.StringVar(&bf.Cert, "cert", os.Getenv(fleetconn.CertEnv), "client certificate `FILE` (PEM) for mutual TLS (default $"+fleetconn.CertEnv+")")
	fs.StringVar(&bf.Key, "client-key", os.Getenv(fleetconn.KeyEnv), "client certificate key `FILE` (PEM) (default $"+fleetconn.KeyEnv+")")
	fs.StringVar(&bf.User, "user", os.Getenv(fleetconn.UserEnv), "MQTT username (default $"+fleetconn.UserEnv+"); the password comes from $"+fleetconn.PasswordEnv)
	fs.StringVar(&bf.Fleet, "fleet", os.Getenv(fleetconn.FleetEnv), "fleet id (required; default $"+fleetconn.FleetEnv+")")
	fs.BoolVar(&bf.AllowPlaintext, "allow-plaintext", false, "permit tcp:// to a host that is not loopback")
	device := fs.String("device", "", "device id (required)")
	key := fs.String("key", "", "the device's public key, base64 (default: the device_key of its retained state message, read from --broker)")
	by := fs.String("by", "", "who enrols, recorded with the enrolment (required)")
	note := fs.String("note", "", "why, recorded with the enrolment (a re-enrolment should say)")
	re := fs.Bool("re-enrol", false, "replace the enrolled key: an explicit act, recorded with the key it replaces")
	fromSeq := fs.String("from-seq", "", "first seq the key signs for (default: the first checkpoint signed by another key than the enrolled one)")
	wait := fs.Duration("wait", 3*time.Second, "longest wait for the retained state message")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl device enrol --db URL --fleet F --device D [--key B64 | --broker URL] --by NAME [--re-enrol] [--note TEXT]\n\n"+
			"Pins the device's Ed25519 public key in the platform database. The platform\n"+
			"then checks every state message and checkpoint against it: a device whose key\n"+
			"changes is flagged, and its records are not proven until it is re-enrolled.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if bf.Fleet == "" || *device == "" || *by == "" {
		return fmt.Errorf("%w: --fleet, --device and --by are required", errUsage)
	}
	req := platform.EnrolRequest{Fleet: bf.Fleet, Device: *device, By: *by, Note: *note, ReEnrol: *re}
	if *fromSeq != "" {
		v, err := strconv.ParseUint(*fromSeq, 10, 63)
		if err != nil {
			return fmt.Errorf("%w: --from-seq: %v", errUsage, err)
		}
		req.FromSeq = &v
	}
	var err error
	if *key != "" {
		if req.Key, err = parseKey(*key); err != nil {
			return err
		}
		req.Source = "key"
	} else {
		if req.Key, err = announcedKey(s, bf, *device, *wait); err != nil {
			return err
		}
		req.Source = "broker"
	}
	st, err := openPlatformDB(s, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	e, err := st.Enrol(s.ctx, req)
	if err != nil {
		return err
	}
	what := "enrolled"
	if e.PreviousKeyID != "" {
		what = fmt.Sprintf("re-enrolled (replacing key %s) from seq %d", e.PreviousKeyID, e.FromSeq)
	}
	fmt.Fprintf(s.stdout, "%s/%s: key %s %s by %s at %s\n", e.Fleet, e.Device, e.KeyID, what, e.By, e.Enrolled)
	return nil
}

// announcedKey reads the device_key of the device's retained state message.
func announcedKey(s stdio, bf *fleetconn.Broker, device string, wait time.Duration) (ed25519.PublicKey, error) {
	if err := bf.Check(true); err != nil {
		return nil, fmt.Errorf("%w: no --key: %w", errUsage, err)
	}
	ctx := fleetCtx(s)
	cl, col, err := fleetSubscribe(ctx, bf, "enrol", fleet.Prefix(bf.Fleet)+device+"/state")
	if err != nil {
		return nil, err
	}
	defer cl.Disconnect(250)
	col.settle(ctx, 300*time.Millisecond, wait)
	keys := deviceKeys{}
	for _, m := range col.take() {
		keys.observe(m.Topic(), m.Payload())
	}
	if keys[device] == "" {
		return nil, fmt.Errorf("no retained state message with a device_key for %s/%s (give --key)", bf.Fleet, device)
	}
	return parseKey(keys[device])
}

func runDeviceList(args []string, s stdio, one bool) error {
	name := "list"
	if one {
		name = "show"
	}
	fs := flag.NewFlagSet("device "+name, flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	db := fs.String("db", "", "platform database: postgres://... or sqlite:FILE (required)")
	fl := fs.String("fleet", "", "fleet (default: every fleet)")
	device := fs.String("device", "", "device id (required for show)")
	asJSON := fs.Bool("json", false, "one JSON object per device")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl device list --db URL [--fleet F] [--json]\n"+
			"       kestrelctl device show --db URL [--fleet F] --device D [--json]\n\n"+
			"The devices' key status: the key each announces, whether it is the enrolled\n"+
			"one (enrolled, unenrolled, changed: FLAGGED), checkpoints by the verdict of\n"+
			"their signature at ingest; show adds the enrolment history.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if one && *device == "" {
		return fmt.Errorf("%w: --device is required", errUsage)
	}
	st, err := openPlatformDB(s, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	keys, err := st.DeviceKeys(s.ctx, *fl, *device)
	if err != nil {
		return err
	}
	if one && len(keys) == 0 {
		return fmt.Errorf("the platform has no device %q", *device)
	}
	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, k := range keys {
			if err := enc.Encode(k); err != nil {
				return err
			}
		}
		return out.Flush()
	}
	if one {
		for _, k := range keys {
			fmt.Fprintf(out, "device      %s/%s\nkey status  %s\nannounced   %s\n", k.Fleet, k.Device, keyStatusText(k), dash(k.AnnouncedID))
			fmt.Fprintf(out, "checkpoints %s\n", checkpointCounts(k))
			for i, e := range k.Enrolments {
				fmt.Fprintf(out, "enrolment %d: key %s from seq %d, by %s at %s (%s)", i+1, e.KeyID, e.FromSeq, e.By, e.Enrolled, e.Source)
				if e.PreviousKeyID != "" {
					fmt.Fprintf(out, ", replacing %s", e.PreviousKeyID)
				}
				if e.Note != "" {
					fmt.Fprintf(out, ": %s", e.Note)
				}
				fmt.Fprintln(out)
			}
		}
		return out.Flush()
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FLEET\tDEVICE\tKEY STATUS\tANNOUNCED\tENROLLED\tCHECKPOINTS")
	for _, k := range keys {
		enrolled := "-"
		if n := len(k.Enrolments); n > 0 {
			enrolled = k.Enrolments[n-1].KeyID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Fleet, k.Device, keyStatusText(k), dash(k.AnnouncedID), enrolled, checkpointCounts(k))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return out.Flush()
}

// keyStatusText says a device's key status, loudly when it is flagged.
func keyStatusText(k platform.DeviceKey) string {
	if k.Status != platform.KeyChanged {
		return k.Status
	}
	s := "CHANGED (flagged: not trusted until re-enrolled"
	if k.ChangedSeq != nil {
		s += fmt.Sprintf(", from seq %d", *k.ChangedSeq)
	}
	return s + ")"
}

func checkpointCounts(k platform.DeviceKey) string {
	if len(k.Checkpoints) == 0 {
		return "-"
	}
	var parts []string
	for _, v := range []string{platform.VerdictEnrolled, platform.VerdictAnnounced, platform.VerdictUnverified} {
		if n := k.Checkpoints[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, v))
		}
	}
	return strings.Join(parts, ", ")
}

// trackEvidence writes the evidence bundle of a track export's range
// (kestrelctl track --evidence FILE), 0600: it holds the device's records.
func trackEvidence(s stdio, st *platform.Store, q platform.TrackQuery, file string) error {
	if q.Limit > 0 {
		return fmt.Errorf("%w: --evidence covers the whole range: no --limit with it", errUsage)
	}
	b, err := st.EvidenceBundle(s.ctx, platform.EvidenceQuery{Fleet: q.Fleet, Device: q.Device, From: q.From, To: q.To})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--evidence: %w", err)
	}
	if err := evidence.WriteBundle(f, b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--evidence: %w", err)
	}
	fmt.Fprintf(s.stderr, "kestrelctl track: evidence bundle of %d records in %s (kestrelctl verify %s)\n", len(b.Records), file, file)
	return nil
}

// fillKeyStatus sets each device's key status (kestrelctl status --db)
// from the platform's, and from the key its retained state announces now:
// one that is not the enrolled key is CHANGED even before the platform
// has seen it.
func fillKeyStatus(s stdio, st *platform.Store, fleetID string, devs []deviceStatus) error {
	keys, err := st.DeviceKeys(s.ctx, fleetID, "")
	if err != nil {
		return err
	}
	byID := make(map[string]platform.DeviceKey, len(keys))
	for _, k := range keys {
		byID[k.Device] = k
	}
	for i := range devs {
		ds := &devs[i]
		k, ok := byID[ds.Device]
		if !ok {
			k = platform.DeviceKey{Status: platform.KeyUnenrolled}
		}
		ds.KeyStatus = keyStatusText(k)
		live, _ := ds.State["device_key"].(string)
		if n := len(k.Enrolments); n > 0 && live != "" && live != k.Enrolments[n-1].DeviceKey && k.Status != platform.KeyChanged {
			ds.KeyStatus = fmt.Sprintf("CHANGED (flagged: the retained state announces a key other than the enrolled %s)", k.Enrolments[n-1].KeyID)
		}
	}
	return nil
}
