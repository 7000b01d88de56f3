package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/evidence"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

type evidenceTestKey struct{ k ed25519.PrivateKey }

func (s evidenceTestKey) Sign(m []byte) []byte { return ed25519.Sign(s.k, m) }

// evidenceTestCapture stamps n positions with a checkpoint every 40, as
// the agent does, and returns them as received payloads ("TOPIC HEX"
// lines, one batch of 25 a line, the first batch sent twice as QoS 1 may).
func evidenceTestCapture(t *testing.T, n int) (string, string) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	key := evidenceTestKey{priv}
	ch := evidence.NewChain(evidence.Head{})
	var recs []kestrel.Record
	seq := uint64(0)
	stamp := func(body kestrel.Body) kestrel.Record {
		seq++
		return kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-4", Boot: 1, Seq: seq, Time: 1_700_000_000_000 + int64(seq)*1000, Priority: kestrel.PriorityNormal}, Body: body}
	}
	ckpt := func(reason kestrel.CheckpointReason) {
		r := stamp(nil)
		if err := ch.Checkpoint(&r, reason, key); err != nil {
			t.Fatal(err)
		}
		_ = ch.Add(&r)
		recs = append(recs, r)
	}
	ckpt(kestrel.CheckpointBoot)
	for i := range n {
		r := stamp(&kestrel.Position{Lat: 515000000 + int32(i)*13, Lon: -1200000, Mode: kestrel.Fix2D})
		_ = ch.Add(&r)
		recs = append(recs, r)
		if ch.Since() >= 40 {
			ckpt(kestrel.CheckpointRecords)
		}
	}
	ckpt(kestrel.CheckpointShutdown)
	var e wire.Encoder
	var lines []string
	for i := 0; i < len(recs); i += 25 {
		p, err := e.AppendBatch(nil, "bwc-4", recs[i:min(i+25, len(recs))])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, "kestrel/v1/test/bwc-4/telemetry "+hex.EncodeToString(p))
	}
	lines = append(lines, lines[0])
	return strings.Join(lines, "\n") + "\n", base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

func TestVerifyCommand(t *testing.T) {
	capture, key := evidenceTestCapture(t, 200)
	code, bundle, stderr := wireTestRun(t, capture, "evidence", "bundle", "--device", "bwc-4", "--key", key)
	if code != 0 {
		t.Fatalf("evidence bundle: exit %d: %s", code, stderr)
	}
	code, out, stderr := wireTestRun(t, bundle, "verify")
	if code != 0 || !strings.Contains(out, "verified: device bwc-4") {
		t.Fatalf("verify clean: exit %d\n%s%s", code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(bundle), "\n")

	// Each tampering exits 1 and names its problem.
	deleted := strings.Join(append(append([]string(nil), lines[:60]...), lines[61:]...), "\n")
	swapped := append([]string(nil), lines...)
	swapped[30], swapped[31] = swapped[31], swapped[30]
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	for name, c := range map[string]struct {
		in   string
		args []string
		want string
	}{
		"deleted":   {in: deleted, want: fmt.Sprintf("seq %d: missing", 60)},
		"reordered": {in: strings.Join(swapped, "\n"), want: "order"},
		"tampered":  {in: evidenceTestTamper(t, lines, 100), want: "altered"},
		"wrong key": {in: bundle, args: []string{"--key", base64.StdEncoding.EncodeToString(other)}, want: "key"},
	} {
		code, out, stderr := wireTestRun(t, c.in, append([]string{"verify"}, c.args...)...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q\n%s", name, code, stderr, c.want, out)
		}
	}
	if code, _, _ := wireTestRun(t, "{", "verify"); code != 1 {
		t.Errorf("malformed bundle: exit %d", code)
	}
}

// evidenceTestTamper moves one position of a bundle line by 1e-7 degrees.
func evidenceTestTamper(t *testing.T, lines []string, i int) string {
	out := append([]string(nil), lines...)
	raw, _ := hex.DecodeString(strings.TrimSuffix(strings.TrimPrefix(lines[i], `{"record":"`), `"}`))
	r, err := wire.DecodeRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Body.(*kestrel.Position)
	p.Lat++
	b, err := wire.AppendRecord(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	out[i] = `{"record":"` + hex.EncodeToString(b) + `"}`
	return strings.Join(out, "\n")
}
