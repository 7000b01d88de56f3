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
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// The evidence chain's tools (docs/evidence.md): build a disclosure
// bundle from the payloads the platform received, and verify one offline.
func init() {
	commands.Commands["verify"] = subcmd.Command[stdio]{Summary: "verify [--key B64] [BUNDLE|-]: check an evidence bundle's hash chain and signed checkpoints", Run: runVerify}
	commands.Commands["evidence"] = subcmd.Command[stdio]{Summary: "evidence bundle --device D --key B64 [FILE|-]: evidence bundle from received payloads", Run: runEvidence}
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
	key := fs.String("key", "", "the device key to trust (base64, e.g. from the enrolment record); default: the bundle's own")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl verify [--key B64] [BUNDLE|-]\n\n"+
			"Verifies an evidence bundle (docs/evidence.md) offline: every record between\n"+
			"two checkpoints hashes to the head the device key signed, and which seqs are\n"+
			"missing. Prints a summary; exits 1 naming the first problem when there is one.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
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
	rep := evidence.Verify(b, pin)
	fmt.Fprint(s.stdout, rep.Summary())
	if !rep.OK() {
		return fmt.Errorf("verify: %s (%d problems in all)", rep.Problems[0], len(rep.Problems))
	}
	fmt.Fprintf(s.stdout, "verified: device %s, every record proven unaltered and none missing\n", b.Header.Device)
	return nil
}

func runEvidence(args []string, s stdio) error {
	if len(args) == 0 || args[0] != "bundle" {
		return fmt.Errorf("%w: usage: kestrelctl evidence bundle --device D --key B64 [FILE|-]", errUsage)
	}
	fs := flag.NewFlagSet("evidence bundle", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	device := fs.String("device", "", "device id (required)")
	key := fs.String("key", "", "the device's public key, base64 (required)")
	fleet := fs.String("fleet", "", "fleet, recorded in the header")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kestrelctl evidence bundle --device D --key B64 [FILE|-]\n\n"+
			"Reads received payloads as \"TOPIC HEX\" lines (the input of \"kestrelctl decode\n"+
			"--hex\"), keeps the device's records in seq order, drops identical\n"+
			"redeliveries, and writes an evidence bundle for \"kestrelctl verify\".\n\nflags:\n")
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args[1:]); help || err != nil {
		return err
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
