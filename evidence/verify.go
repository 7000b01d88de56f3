package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	kestrel "github.com/kestrel-edge/kestrel"
)

// Problem is one thing verification found wrong.
type Problem struct {
	Seq    uint64 `json:"seq"`  // the first seq it concerns
	Kind   string `json:"kind"` // order, duplicate, forged, missing, altered, extra, continuity, key, unproven
	Detail string `json:"detail"`
}

func (p Problem) String() string { return fmt.Sprintf("seq %d: %s: %s", p.Seq, p.Kind, p.Detail) }

// Range is an inclusive range of seqs.
type Range struct{ First, Last uint64 }

func (r Range) String() string {
	if r.First == r.Last {
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Report is the outcome of Verify.
type Report struct {
	Records     int     // records in the bundle, checkpoints included
	Checkpoints int     // checkpoints in the bundle
	Signed      int     // checkpoints whose signature verifies
	Proven      int     // records proven unaltered by a signed checkpoint (checkpoints included)
	Missing     []Range // seqs a signed checkpoint covers that the bundle lacks
	// Tail are the records after the last signed checkpoint: chained,
	// never signed (yet), so unproven, never "verified".
	Tail     []Range
	FirstSeq uint64 // the checkpoint an export of a range starts at (0: the genesis)
	Problems []Problem
}

// OK is true when every record is proven and nothing is missing.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Summary is a human-readable account, one line per problem.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d records, %d checkpoints (%d signed by the device key), %d records proven unaltered\n",
		r.Records, r.Checkpoints, r.Signed, r.Proven)
	if r.FirstSeq != 0 {
		fmt.Fprintf(&b, "export of a range: starts at checkpoint seq %d\n", r.FirstSeq)
	}
	if len(r.Missing) > 0 {
		s := make([]string, len(r.Missing))
		for i, m := range r.Missing {
			s[i] = m.String()
		}
		fmt.Fprintf(&b, "missing seqs: %s\n", strings.Join(s, ", "))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "%s\n", p)
	}
	return b.String()
}

// Verify checks a bundle's records against its checkpoints and the device
// key (docs/evidence.md, "Verification"). pin, when set, is the key the
// caller trusts; the bundle's own key must equal it. Without pin, the
// bundle's enrolment history names the keys when it has one, else its
// device_key is trusted.
func Verify(b *Bundle, pin ed25519.PublicKey) *Report {
	if pin != nil {
		rep := VerifyKeys(b, []KeySpan{{Key: pin}})
		if !bytes.Equal(pin, b.Key) {
			rep.Problems = append([]Problem{{Kind: "key", Detail: "the bundle's device_key is not the pinned key"}}, rep.Problems...)
		}
		return rep
	}
	if len(b.Header.Enrolment) > 0 {
		spans, err := KeySpans(b.Header.Enrolment)
		if err != nil {
			return &Report{Records: len(b.Records), Problems: []Problem{{Kind: "key", Detail: err.Error()}}}
		}
		return VerifyKeys(b, spans)
	}
	return VerifyKeys(b, []KeySpan{{Key: b.Key}})
}

// KeyFor is the key spans trust for a checkpoint at seq, and the seq its
// span starts at; nil when none covers seq.
func KeyFor(spans []KeySpan, seq uint64) (ed25519.PublicKey, uint64) {
	var k ed25519.PublicKey
	var from uint64
	for _, s := range spans {
		if s.FromSeq <= seq {
			k, from = s.Key, s.FromSeq
		}
	}
	return k, from
}

// VerifyKeys is Verify with the trusted keys given as spans of seqs (an
// enrolment history). A checkpoint that fails with its span's key but
// verifies with the bundle's device_key (the key the device announces) is
// a "key" problem: the device's key changed, or the enrolment was altered;
// its range is not proven until the key is enrolled.
func VerifyKeys(b *Bundle, spans []KeySpan) *Report {
	rep := &Report{Records: len(b.Records), FirstSeq: b.Header.FirstSeq}
	rep.Problems = append(rep.Problems, b.Header.Notes...)
	anchor := b.Header.FirstSeq
	// Seq order: the bundle lists the chain in order.
	recs := make([]*kestrel.Record, 0, len(b.Records))
	for i := range b.Records {
		r := &b.Records[i]
		if n := len(recs); n > 0 && r.Seq <= recs[n-1].Seq {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "order",
				Detail: fmt.Sprintf("record %d of the bundle comes after seq %d", i+1, recs[n-1].Seq)})
		}
		recs = append(recs, r)
	}
	slices.SortStableFunc(recs, func(a, b *kestrel.Record) int { return cmpU64(a.Seq, b.Seq) })
	uniq := recs[:0]
	var buf []byte
	for _, r := range recs {
		if n := len(uniq); n > 0 && uniq[n-1].Seq == r.Seq {
			a, _ := AppendCanonical(nil, uniq[n-1])
			c, _ := AppendCanonical(nil, r)
			if !bytes.Equal(a, c) {
				rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "duplicate", Detail: "two different records with this seq"})
			}
			continue
		}
		uniq = append(uniq, r)
	}
	recs = uniq
	at := make(map[uint64]int, len(recs))
	for i, r := range recs {
		at[r.Seq] = i
	}
	// Checkpoints, and the digest each one's own record has in the chain.
	signed := map[uint64]Digest{}
	for _, r := range recs {
		c, ok := r.Body.(*kestrel.Checkpoint)
		if !ok {
			continue
		}
		rep.Checkpoints++
		key, from := KeyFor(spans, r.Seq)
		if key == nil {
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "key", Detail: fmt.Sprintf("no key is enrolled for checkpoint seq %d", r.Seq)})
			continue
		}
		if err := VerifyCheckpoint(key, r); err != nil {
			if !bytes.Equal(key, b.Key) && VerifyCheckpoint(b.Key, r) == nil {
				rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "key",
					Detail: fmt.Sprintf("checkpoint seq %d is signed by the device's announced key %s, not the key %s enrolled from seq %d: the device key changed (or the enrolment was altered); not trusted until re-enrolled", r.Seq, keyID(b.Key), keyID(key), from)})
				continue
			}
			rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "forged", Detail: err.Error() + " " + keyID(key)})
			continue
		}
		rep.Signed++
		d, b2, _ := Next(Digest(c.Head), r, buf)
		buf = b2
		signed[r.Seq] = d
	}
	proven := make([]bool, len(recs))
	for i, r := range recs {
		c, ok := r.Body.(*kestrel.Checkpoint)
		if !ok {
			continue
		}
		if _, ok := signed[r.Seq]; !ok {
			continue
		}
		proven[i] = true // its content is signed; its place in the chain is checked by the next
		if anchor != 0 && r.Seq == anchor {
			continue // the export starts here: what came before is outside it
		}
		if c.Reason == kestrel.CheckpointBoot {
			if c.FromSeq == 0 && Digest(c.Head) == Genesis {
				if i > 0 {
					rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "continuity",
						Detail: fmt.Sprintf("boot %d restarts the chain from the genesis after seq %d (the device lost its persisted head)", r.Boot, recs[i-1].Seq)})
				}
				continue // a new device's chain
			}
			if d, ok := signed[c.FromSeq]; ok {
				if d != Digest(c.Head) {
					rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "continuity",
						Detail: fmt.Sprintf("boot %d says it continues from seq %d, whose chain digest differs", r.Boot, c.FromSeq)})
				}
			} else if _, present := at[c.FromSeq]; present {
				rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Kind: "continuity",
					Detail: fmt.Sprintf("boot %d continues from seq %d, which is not a signed checkpoint", r.Boot, c.FromSeq)})
			}
			continue
		}
		start := Genesis
		if c.FromSeq != 0 {
			d, ok := signed[c.FromSeq]
			if !ok {
				rep.Problems = append(rep.Problems, Problem{Seq: c.FromSeq, Kind: "missing",
					Detail: fmt.Sprintf("the checkpoint that checkpoint seq %d continues from is not in the bundle (or not signed): seqs %d-%d cannot be proven", r.Seq, c.FromSeq+1, c.LastSeq)})
				if _, present := at[c.FromSeq]; !present {
					rep.Missing = append(rep.Missing, Range{c.FromSeq, c.FromSeq})
				}
				continue
			}
			start = d
		}
		// Fold the records the checkpoint covers.
		lo, _ := slices.BinarySearchFunc(recs, c.FromSeq+1, func(a *kestrel.Record, s uint64) int { return cmpU64(a.Seq, s) })
		d := start
		var n uint64
		var missing []Range
		next := c.FromSeq + 1
		j := lo
		for ; j < len(recs) && recs[j].Seq <= c.LastSeq && recs[j].Seq < r.Seq; j++ {
			if recs[j].Seq > next {
				missing = append(missing, Range{next, recs[j].Seq - 1})
			}
			next = recs[j].Seq + 1
			d, buf, _ = Next(d, recs[j], buf)
			n++
		}
		if c.LastSeq >= next && c.LastSeq >= c.FromSeq+1 {
			missing = append(missing, Range{next, c.LastSeq})
		}
		span := fmt.Sprintf("seqs %d-%d", c.FromSeq+1, c.LastSeq)
		switch {
		case n < c.Count:
			rep.Missing = append(rep.Missing, missing...)
			rep.Problems = append(rep.Problems, Problem{Seq: firstOf(missing, c.FromSeq+1), Kind: "missing",
				Detail: fmt.Sprintf("checkpoint seq %d covers %d records in %s, the bundle has %d; absent: %s", r.Seq, c.Count, span, n, ranges(missing))})
		case n > c.Count:
			rep.Problems = append(rep.Problems, Problem{Seq: c.FromSeq + 1, Kind: "extra",
				Detail: fmt.Sprintf("checkpoint seq %d covers %d records in %s, the bundle has %d", r.Seq, c.Count, span, n)})
		case d != Digest(c.Head):
			rep.Problems = append(rep.Problems, Problem{Seq: c.FromSeq + 1, Kind: "altered",
				Detail: fmt.Sprintf("the records in %s do not hash to the head checkpoint seq %d signed: one was altered, reordered or replaced", span, r.Seq)})
		default:
			for k := lo; k < j; k++ {
				proven[k] = true
			}
		}
	}
	var unc []Range
	for i, r := range recs {
		if proven[i] {
			rep.Proven++
			continue
		}
		if n := len(unc); n > 0 && unc[n-1].Last+1 == r.Seq {
			unc[n-1].Last = r.Seq
		} else {
			unc = append(unc, Range{r.Seq, r.Seq})
		}
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int { return cmpU64(a.Seq, b.Seq) })
	slices.SortFunc(rep.Missing, func(a, b Range) int { return cmpU64(a.First, b.First) })
	// Unproven records are the consequence of the problems above, or a
	// tail no checkpoint reached yet: listed last, the tail on its own.
	var lastSigned uint64
	for seq := range signed {
		lastSigned = max(lastSigned, seq)
	}
	var tail []Range
	for len(unc) > 0 && unc[len(unc)-1].First > lastSigned {
		tail = append([]Range{unc[len(unc)-1]}, tail...)
		unc = unc[:len(unc)-1]
	}
	if len(unc) > 0 {
		n := 0
		for _, u := range unc {
			n += int(u.Last - u.First + 1)
		}
		rep.Problems = append(rep.Problems, Problem{Seq: unc[0].First, Kind: "unproven",
			Detail: fmt.Sprintf("%d records not proven by a signed checkpoint: seqs %s", n, ranges(unc))})
	}
	if len(tail) > 0 {
		n := 0
		for _, u := range tail {
			n += int(u.Last - u.First + 1)
		}
		rep.Tail = tail
		rep.Problems = append(rep.Problems, Problem{Seq: tail[0].First, Kind: "unproven",
			Detail: fmt.Sprintf("tail: %d records after the last signed checkpoint (seq %d) are chained but not yet signed, so unproven: seqs %s (the device lost power before its next checkpoint, or has not sent it yet)", n, lastSigned, ranges(tail))})
	}
	return rep
}

// keyID is the key id of transport/fleet (hex of the first 8 bytes of
// SHA-256 of the key), for messages.
func keyID(k ed25519.PublicKey) string {
	h := sha256.Sum256(k)
	return hex.EncodeToString(h[:8])
}

func firstOf(rs []Range, def uint64) uint64 {
	if len(rs) > 0 {
		return rs[0].First
	}
	return def
}

func ranges(rs []Range) string {
	if len(rs) == 0 {
		return "none by seq (seqs refused by a full spool are never chained)"
	}
	s := make([]string, 0, min(len(rs), 20))
	for i, r := range rs {
		if i == 20 {
			s = append(s, fmt.Sprintf("and %d more ranges", len(rs)-20))
			break
		}
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
