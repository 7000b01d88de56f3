package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// The evidence chain's tools (docs/evidence.md): build a disclosure
// bundle from the payloads the platform received, and verify one offline.
func init() {
	commands.Commands["verify"] = subcmd.Command[stdio]{Summary: "verify [--key B64] [BUNDLE|-] | verify --db URL --device D [--from T] [--to T]: check an evidence bundle or a database range", Run: runVerify}
	commands.Commands["evidence"] = subcmd.Command[stdio]{Summary: "evidence bundle --db URL --device D [--from T] [--to T] | --device D --key B64 [FILE|-]: evidence bundle", Run: runEvidence}
}

func parseKey(s string) (ed25519.PublicKey, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: --key: not a base64 Ed25519 public key (the device_key of the state message)", errUsage)
	}
	return ed25519.PublicKey(k), nil
}

func runVerify(args []string, s stdio) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	key := fs.String("key", "", "the device key to trust (base64); default: the bundle's enrolment history, else its device_key")
	dbr := addDBRange(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl verify [--key B64] [BUNDLE|-]\n"+
			"       kestrelctl verify --db URL --device D [--fleet F] [--from T] [--to T]\n\n"+
			"Verifies an evidence bundle (docs/evidence.md) offline, or a range of the\n"+
			"platform database directly: every record between two checkpoints hashes to\n"+
			"the head the enrolled device key signed, and which seqs are missing. Records\n"+
			"after the last signed checkpoint are reported as an unproven tail, never as\n"+
			"verified. Prints a summary; exits 1 naming the first problem when there is one.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args); help || err != nil {
		return err
	}
	if *dbr.db != "" {
		if *key != "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: --db verifies the database: no --key or BUNDLE with it", errUsage)
		}
		b, err := dbr.bundle(s, "verify --db")
		if err != nil {
			return err
		}
		return report(s, b, evidence.Verify(b, nil))
	}
	var pin ed25519.PublicKey
	if *key != "" {
		var err error
		if pin, err = parseKey(*key); err != nil {
			return err
		}
	}
	in, err := openInput(fs.Args(), s)
	if err != nil {
		return err
	}
	defer in.Close()
	b, err := evidence.ReadBundle(in)
	if err != nil {
		return err
	}
	return report(s, b, evidence.Verify(b, pin))
}

func report(s stdio, b *evidence.Bundle, rep *evidence.Report) error {
	fmt.Fprint(s.stdout, rep.Summary())
	if !rep.OK() {
		return fmt.Errorf("verify: %s (%d problems in all)", rep.Problems[0], len(rep.Problems))
	}
	fmt.Fprintf(s.stdout, "verified: device %s, every record proven unaltered and none missing\n", b.Header.Device)
	return nil
}

// dbRange is the flags that select a device's records in the platform
// database for an evidence bundle.
type dbRange struct {
	db, fleet, device, from, to *string
	op                          *operatorFlags
}

func addDBRange(fs *flag.FlagSet) dbRange {
	return dbRange{
		db:     fs.String("db", "", "platform database: postgres://... or sqlite:FILE"),
		fleet:  fs.String("fleet", "", "fleet (default: the device's one fleet)"),
		device: fs.String("device", "", "device id"),
		from:   fs.String("from", "", "first time, RFC 3339 or a duration before now (2h); default: the first record"),
		to:     fs.String("to", "", "end time (exclusive), RFC 3339 or a duration before now; default: the last"),
		op:     addOperatorFlags(fs),
	}
}

// bundle rebuilds the range's evidence bundle from the database. The read
// is a consultation (verify) or a disclosure (evidence bundle), logged in
// the database's consultations chain before anything is returned.
func (r dbRange) bundle(s stdio, command string) (*evidence.Bundle, error) {
	if *r.device == "" {
		return nil, fmt.Errorf("%w: --device is required with --db", errUsage)
	}
	q := platform.EvidenceQuery{Fleet: *r.fleet, Device: *r.device}
	now := time.Now()
	var err error
	if q.From, err = platform.ParseTime(*r.from, now); err != nil {
		return nil, fmt.Errorf("%w: --from: %v", errUsage, err)
	}
	if q.To, err = platform.ParseTime(*r.to, now); err != nil {
		return nil, fmt.Errorf("%w: --to: %v", errUsage, err)
	}
	st, err := openPlatformDB(s, *r.db)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rf, rt := timeRange(q.From, q.To)
	k, err := startConsultation(s, st, r.op, Consultation{Command: command, Fleet: *r.fleet, Device: *r.device, From: rf, To: rt})
	if err != nil {
		return nil, err
	}
	b, err := st.EvidenceBundle(s.ctx, q)
	if err != nil {
		return nil, k.finish(err, "")
	}
	if err := k.finish(nil, fmt.Sprintf("%d records", len(b.Records))); err != nil {
		return nil, err
	}
	return b, nil
}

func runEvidence(args []string, s stdio) error {
	if len(args) == 0 || args[0] != "bundle" {
		return fmt.Errorf("%w: usage: kestrelctl evidence bundle --db URL --device D [--from T] [--to T] | --device D --key B64 [FILE|-]", errUsage)
	}
	fs := flag.NewFlagSet("evidence bundle", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	dbr := addDBRange(fs)
	device, fleet := dbr.device, dbr.fleet
	key := fs.String("key", "", "the device's public key, base64 (required without --db)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl evidence bundle --db URL --device D [--fleet F] [--from T] [--to T]\n"+
			"       kestrelctl evidence bundle --device D --key B64 [--fleet F] [FILE|-]\n\n"+
			"With --db, rebuilds the device's records in the range from the platform\n"+
			"database, widened to the signed checkpoints that enclose it, with its key and\n"+
			"enrolment history. Otherwise reads received payloads as \"TOPIC HEX\" lines\n"+
			"(the input of \"kestrelctl decode --hex\"), keeps the device's records in seq\n"+
			"order and drops identical redeliveries. Writes an evidence bundle for\n"+
			"\"kestrelctl verify\".\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.Parse(fs, args[1:]); help || err != nil {
		return err
	}
	if *dbr.db != "" {
		if *key != "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: --db reads the database: no --key or FILE with it", errUsage)
		}
		b, err := dbr.bundle(s, "evidence bundle --db")
		if err != nil {
			return err
		}
		if err := evidence.WriteBundle(s.stdout, b); err != nil {
			return err
		}
		fmt.Fprintf(s.stderr, "kestrelctl evidence: %d records of %s/%s\n", len(b.Records), b.Header.Fleet, b.Header.Device)
		return nil
	}
	if *device == "" {
		return fmt.Errorf("%w: --device is required", errUsage)
	}
	pub, err := parseKey(*key)
	if err != nil {
		return err
	}
	in, err := openInput(fs.Args(), s)
	if err != nil {
		return err
	}
	defer in.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), decodeMaxLine)
	var recs []kestrel.Record
	n := 0
	for sc.Scan() {
		n++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		i := bytes.LastIndexAny(text, " \t")
		if i < 0 {
			return fmt.Errorf("line %d: want TOPIC HEX", n)
		}
		topic := string(bytes.TrimSpace(text[:i]))
		parts := strings.Split(topic, "/")
		if len(parts) != 5 || parts[0] != "kestrel" || parts[1] != "v1" || parts[3] != *device || !decodeIsData(topic) {
			continue
		}
		payload, err := hex.DecodeString(string(text[i+1:]))
		if err != nil {
			return fmt.Errorf("line %d: bad hex: %w", n, err)
		}
		rs, err := wire.DecodeBatchTopic(topic, payload)
		if err != nil {
			return fmt.Errorf("line %d (%s): %w", n, topic, err)
		}
		if len(recs)+len(rs) > evidence.MaxRecords {
			return fmt.Errorf("line %d: more than %d records", n, evidence.MaxRecords)
		}
		recs = append(recs, rs...)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read input after line %d: %w", n, err)
	}
	slices.SortStableFunc(recs, func(a, b kestrel.Record) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	out := bufio.NewWriter(s.stdout)
	if err := evidence.WriteHeader(out, evidence.Header{Fleet: *fleet, Device: *device, DeviceKey: base64.StdEncoding.EncodeToString(pub),
		Exported: time.Now().UTC().Format(time.RFC3339)}); err != nil {
		return err
	}
	var buf, prev []byte
	kept := 0
	for i := range recs {
		c, err := evidence.AppendCanonical(nil, &recs[i])
		if err != nil {
			return fmt.Errorf("seq %d: %w", recs[i].Seq, err)
		}
		if i > 0 && recs[i].Seq == recs[i-1].Seq && bytes.Equal(c, prev) {
			continue // a redelivery (QoS 1 is at least once)
		}
		prev = c
		if buf, err = evidence.WriteRecord(out, &recs[i], buf); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		kept++
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	fmt.Fprintf(s.stderr, "kestrelctl evidence: %d records of %s\n", kept, *device)
	return nil
}
