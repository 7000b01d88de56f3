package evidence

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"

	kestrel "github.com/kestrel-edge/kestrel"
)

type keySigner struct{ k ed25519.PrivateKey }

func (s keySigner) Sign(m []byte) []byte { return ed25519.Sign(s.k, m) }

func newKey(t testing.TB, seed byte) (ed25519.PublicKey, keySigner) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), keySigner{priv}
}

// shift simulates a device: boots boots, each of n positions with a
// checkpoint every every records, a boot checkpoint at each start and a
// shutdown checkpoint at the end, as the agent stamps them.
func shift(t testing.TB, s Signer, boots, n, every int) []kestrel.Record {
	var out []kestrel.Record
	var head Head
	seq := uint64(0)
	tm := int64(1_700_000_000_000)
	for b := 1; b <= boots; b++ {
		ch := NewChain(head)
		seq += 5 // the spool's unused seq reservation of the last boot
		stamp := func(body kestrel.Body) kestrel.Record {
			seq++
			tm += 1000
			return kestrel.Record{Envelope: kestrel.Envelope{Device: "bwc-1", Boot: uint32(b), Seq: seq, Time: tm, Priority: kestrel.PriorityNormal}, Body: body}
		}
		ckpt := func(reason kestrel.CheckpointReason) {
			r := stamp(nil)
			if err := ch.Checkpoint(&r, reason, s); err != nil {
				t.Fatal(err)
			}
			if err := ch.Add(&r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		ckpt(kestrel.CheckpointBoot)
		for i := 0; i < n; i++ {
			r := stamp(&kestrel.Position{Lat: 515000000 + int32(i), Lon: -1000000 - int32(i), Alt: 1234, Mode: kestrel.Fix3D, Flags: kestrel.HasAlt})
			if err := ch.Add(&r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
			if ch.Since() >= uint64(every) {
				ckpt(kestrel.CheckpointRecords)
			}
		}
		ckpt(kestrel.CheckpointShutdown)
		head = ch.Head()
	}
	return out
}

func bundleOf(t testing.TB, pub ed25519.PublicKey, recs []kestrel.Record) []byte {
	var w bytes.Buffer
	if err := WriteHeader(&w, Header{Device: "bwc-1", DeviceKey: base64.StdEncoding.EncodeToString(pub)}); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for i := range recs {
		var err error
		if buf, err = WriteRecord(&w, &recs[i], buf); err != nil {
			t.Fatal(err)
		}
	}
	return w.Bytes()
}

func verifyBytes(t *testing.T, data []byte) *Report {
	t.Helper()
	b, err := ReadBundle(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return Verify(b, nil)
}

func TestCleanShiftVerifies(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 3, 1000, 300)
	rep := verifyBytes(t, bundleOf(t, pub, recs))
	if !rep.OK() || rep.Proven != len(recs) {
		t.Fatalf("clean shift: %s", rep.Summary())
	}
}

func wantProblem(t *testing.T, rep *Report, kind string, seq uint64) {
	t.Helper()
	if rep.OK() {
		t.Fatalf("tampering not caught: %s", rep.Summary())
	}
	p := rep.Problems[0]
	if p.Kind != kind || p.Seq != seq {
		t.Fatalf("first problem %q, want %s at seq %d\n%s", p, kind, seq, rep.Summary())
	}
}

func TestTamperedValueCaught(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 2, 700, 300)
	p := recs[400].Body.(*kestrel.Position)
	p.Lat++ // one 1e-7 degree
	rep := verifyBytes(t, bundleOf(t, pub, recs))
	// recs[400] is in the second segment of boot 1: seqs after the checkpoint at index 301.
	wantProblem(t, rep, "altered", recs[302].Seq)
}

func TestDeletedRecordNamed(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 2, 700, 300)
	gone := recs[500].Seq
	recs = append(recs[:500:500], recs[501:]...)
	rep := verifyBytes(t, bundleOf(t, pub, recs))
	wantProblem(t, rep, "missing", gone)
	if len(rep.Missing) != 1 || rep.Missing[0] != (Range{gone, gone}) {
		t.Fatalf("missing %v, want exactly seq %d", rep.Missing, gone)
	}
}

func TestReorderedRecordsCaught(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 1, 700, 300)
	// Lines swapped in the file.
	swapped := append([]kestrel.Record(nil), recs...)
	swapped[100], swapped[101] = swapped[101], swapped[100]
	wantProblem(t, verifyBytes(t, bundleOf(t, pub, swapped)), "order", swapped[101].Seq)
	// Contents swapped between two seqs, the seqs left in order.
	moved := append([]kestrel.Record(nil), recs...)
	moved[100].Body, moved[101].Body = moved[101].Body, moved[100].Body
	wantProblem(t, verifyBytes(t, bundleOf(t, pub, moved)), "altered", recs[1].Seq)
}

func TestForgedCheckpointCaught(t *testing.T) {
	pub, s := newKey(t, 1)
	_, other := newKey(t, 2)
	recs := shift(t, s, 1, 700, 300)
	ck := 301 // the second records checkpoint
	if _, ok := recs[ck].Body.(*kestrel.Checkpoint); !ok {
		t.Fatalf("record %d is %s", ck, recs[ck].Kind())
	}
	// Re-signed by another key.
	forged := append([]kestrel.Record(nil), recs...)
	c := *forged[ck].Body.(*kestrel.Checkpoint)
	forged[ck].Body = &c
	msg, _ := SignedMessage(&forged[ck])
	c.Sig = other.Sign(msg)
	rep := verifyBytes(t, bundleOf(t, pub, forged))
	if rep.Problems[0].Kind != "forged" || rep.Problems[0].Seq > forged[ck].Seq {
		t.Fatalf("wrong key: %s", rep.Summary())
	}
	// Head altered to cover an altered record, signature kept.
	alt := append([]kestrel.Record(nil), recs...)
	c2 := *alt[ck].Body.(*kestrel.Checkpoint)
	c2.Head = bytes.Repeat([]byte{7}, DigestSize)
	alt[ck].Body = &c2
	rep = verifyBytes(t, bundleOf(t, pub, alt))
	found := false
	for _, p := range rep.Problems {
		found = found || (p.Kind == "forged" && p.Seq == alt[ck].Seq && strings.Contains(p.Detail, "signature"))
	}
	if !found {
		t.Fatalf("altered head: %s", rep.Summary())
	}
}

func TestPinnedKeyMismatch(t *testing.T) {
	pub, s := newKey(t, 1)
	other, _ := newKey(t, 2)
	b, err := ReadBundle(bytes.NewReader(bundleOf(t, pub, shift(t, s, 1, 10, 5))))
	if err != nil {
		t.Fatal(err)
	}
	if rep := Verify(b, other); rep.OK() || rep.Problems[0].Kind != "key" {
		t.Fatalf("pinned key: %s", rep.Summary())
	}
}

func TestUncoveredTail(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 1, 50, 20)
	recs = recs[:len(recs)-1] // no shutdown checkpoint: a power cut
	rep := verifyBytes(t, bundleOf(t, pub, recs))
	last := rep.Problems[len(rep.Problems)-1]
	if rep.OK() || last.Kind != "unproven" || !strings.Contains(last.Detail, "tail") || len(rep.Tail) != 1 {
		t.Fatalf("tail: %s", rep.Summary())
	}
	// The tail is the records after the last checkpoint, exactly.
	var lastCk uint64
	for _, r := range recs {
		if r.Kind() == kestrel.KindCheckpoint {
			lastCk = r.Seq
		}
	}
	if rep.Tail[0] != (Range{lastCk + 1, recs[len(recs)-1].Seq}) || rep.Proven != len(recs)-int(recs[len(recs)-1].Seq-lastCk) {
		t.Fatalf("tail %v after checkpoint %d: %s", rep.Tail, lastCk, rep.Summary())
	}
}

// enrolled is a bundle whose header carries an enrolment history.
func enrolled(t *testing.T, announced ed25519.PublicKey, recs []kestrel.Record, es ...Enrolment) *Bundle {
	t.Helper()
	b, err := ReadBundle(bytes.NewReader(bundleOf(t, announced, recs)))
	if err != nil {
		t.Fatal(err)
	}
	b.Header.Enrolment = es
	return b
}

func enrolmentOf(k ed25519.PublicKey, from uint64) Enrolment {
	return Enrolment{Fleet: "f", Device: "bwc-1", DeviceKey: base64.StdEncoding.EncodeToString(k), KeyID: keyID(k), FromSeq: from, By: "test"}
}

// TestKeyChangeNotTrustedUntilReenrolled: a device whose key changes
// mid-stream (a reset device, or a substituted one) has the new key's
// checkpoints named "key" and their records unproven; a re-enrolment
// from the first new checkpoint proves them, the old key's still proven.
func TestKeyChangeNotTrustedUntilReenrolled(t *testing.T) {
	pubA, a := newKey(t, 1)
	pubB, bk := newKey(t, 2)
	first := shift(t, a, 1, 100, 40)
	second := shift(t, bk, 1, 100, 40)
	// The second device continues the seqs (a reset keeps the spool's
	// high-water mark): renumber after the first's last seq.
	last := first[len(first)-1].Seq
	// It keeps the chain head too (only the key changed).
	ch := NewChain(Head{})
	for i := range first {
		_ = ch.Add(&first[i])
	}
	ch = NewChain(ch.Head())
	var recs []kestrel.Record
	recs = append(recs, first...)
	for _, r := range second {
		r.Seq += last
		if c, ok := r.Body.(*kestrel.Checkpoint); ok {
			cp := kestrel.Record{Envelope: r.Envelope}
			if err := ch.Checkpoint(&cp, c.Reason, bk); err != nil {
				t.Fatal(err)
			}
			r = cp
		}
		_ = ch.Add(&r)
		recs = append(recs, r)
	}
	changeAt := last + second[0].Seq
	rep := Verify(enrolled(t, pubB, recs, enrolmentOf(pubA, 0)), nil)
	if rep.OK() || rep.Problems[0].Kind != "key" || rep.Problems[0].Seq != changeAt {
		t.Fatalf("key change: %s", rep.Summary())
	}
	if rep.Proven != len(first) {
		t.Fatalf("proven %d, want the %d records of the enrolled key: %s", rep.Proven, len(first), rep.Summary())
	}
	rep = Verify(enrolled(t, pubB, recs, enrolmentOf(pubA, 0), enrolmentOf(pubB, changeAt)), nil)
	if !rep.OK() || rep.Proven != len(recs) {
		t.Fatalf("re-enrolled: %s", rep.Summary())
	}
	// An enrolment whose key was swapped for another: named "key".
	pubC, _ := newKey(t, 3)
	rep = Verify(enrolled(t, pubA, first, enrolmentOf(pubC, 0)), nil)
	if rep.OK() || rep.Problems[0].Kind != "key" || rep.Proven != 0 {
		t.Fatalf("swapped enrolment: %s", rep.Summary())
	}
}

// TestRangeExportAnchored: a bundle of a range starts at a checkpoint;
// without first_seq it reports the records before it as missing, with it
// the range verifies, and a tampered record in it is still caught.
func TestRangeExportAnchored(t *testing.T) {
	pub, s := newKey(t, 1)
	recs := shift(t, s, 2, 700, 300)
	start := 302 // the records checkpoint after the second segment of boot 1
	if recs[start-1].Kind() != kestrel.KindCheckpoint {
		t.Fatalf("record %d is %s", start-1, recs[start-1].Kind())
	}
	part := recs[start-1:]
	b, err := ReadBundle(bytes.NewReader(bundleOf(t, pub, part)))
	if err != nil {
		t.Fatal(err)
	}
	if rep := Verify(b, nil); rep.OK() || rep.Problems[0].Kind != "missing" {
		t.Fatalf("unanchored range: %s", rep.Summary())
	}
	b.Header.FirstSeq = part[0].Seq
	if rep := Verify(b, nil); !rep.OK() || rep.Proven != len(part) {
		t.Fatalf("anchored range: %s", rep.Summary())
	}
	p := *b.Records[10].Body.(*kestrel.Position)
	p.Lon--
	b.Records[10].Body = &p
	if rep := Verify(b, nil); rep.OK() || rep.Problems[0].Kind != "altered" {
		t.Fatalf("tampered in a range: %s", rep.Summary())
	}
}
