package fleet

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The device's audit log is a hash chain (docs/audit.md). Each entry
// carries the digest of the entry before it (Prev) and its own (Digest):
//
//	digest = hex(SHA-256("kestrel-audit/1\n" fleet "\n" device "\n" canonical))
//
// where canonical is the entry's JSON object without its "digest" member,
// re-encoded with its top-level members sorted by name, each value
// compacted, no HTML escaping and no trailing newline. The digest so
// covers every member a device sends, including ones a verifier does not
// know (a newer device's additive fields), and binds the entry to its
// fleet and device. The first entry of a chain has Prev "". Entries are
// sealed with the device key (Seal) on the audit channel.
const auditFormat = "kestrel-audit/1"

// Who acted, in AuditEntry.By besides the verified key ids.
const (
	ByLocal    = "local"    // the local file (SIGHUP, --set)
	ByDevice   = "device"   // the device itself: a privacy trigger, a rollback, state repair
	ByUnsigned = "unsigned" // a remote config or command accepted unsigned (remote.require_signed = false)
)

// AuditDiff is one changed config key as an audit entry records it: the
// values before and after as "kestrelctl config get" prints them, secrets
// redacted (Redact).
type AuditDiff struct {
	Path string `json:"path"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// Redacted replaces a secret value in an audit entry.
const Redacted = "[redacted]"

// secretWords name a key or argument whose value is a secret. A name ending
// in _file is the file's path, which is not.
var secretWords = []string{"password", "passwd", "secret", "token", "psk", "pin", "private", "credential"}

// SecretName reports whether a config key path or command argument name
// holds a secret: its last part names a password, secret, token, PSK, PIN,
// private key or credential (and is not a _file path).
func SecretName(name string) bool {
	last := strings.ToLower(name[strings.LastIndexByte(name, '.')+1:])
	if strings.HasSuffix(last, "_file") || strings.HasSuffix(last, "_path") {
		return false
	}
	for _, w := range secretWords {
		if strings.Contains(last, w) {
			return true
		}
	}
	return last == "key" || strings.HasSuffix(last, "_key") && !strings.HasSuffix(last, "public_key")
}

// Redact returns value, or Redacted when name is a secret (SecretName) and
// value is not empty.
func Redact(name, value string) string {
	if value != "" && SecretName(name) {
		return Redacted
	}
	return value
}

// AuditDigest computes the digest of an entry's JSON body (with or
// without its digest member) for fleet and device.
func AuditDigest(fleetID, device string, body []byte) (string, error) {
	canon, err := canonicalAudit(body)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(auditFormat + "\n" + fleetID + "\n" + device + "\n"))
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func canonicalAudit(body []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: audit entry: %v", ErrMalformed, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: audit entry is not an object", ErrMalformed)
	}
	delete(m, "digest")
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil { // sorted keys, compacted values
		return nil, fmt.Errorf("%w: audit entry: %v", ErrMalformed, err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Chain links e after the entry whose digest is prev, sets e.Prev and
// e.Digest, and returns e's JSON body, ready to Seal on the audit channel.
func (e *AuditEntry) Chain(fleetID, device, prev string) ([]byte, error) {
	e.Prev, e.Digest = prev, ""
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	d, err := AuditDigest(fleetID, device, b)
	if err != nil {
		return nil, err
	}
	e.Digest = d
	return json.Marshal(e)
}

// Chained reports whether the entry carries chain fields (devices from
// before the chain sent none).
func (e *AuditEntry) Chained() bool { return e.Digest != "" }

// CheckDigest recomputes the digest of the body the entry was decoded
// from (or of its JSON, for an entry built in memory) and compares it to
// the digest it carries.
func (e *AuditEntry) CheckDigest(fleetID, device string) error {
	body := e.Body
	if body == nil {
		var err error
		if body, err = json.Marshal(e); err != nil {
			return err
		}
	}
	d, err := AuditDigest(fleetID, device, body)
	if err != nil {
		return err
	}
	if d != e.Digest {
		return fmt.Errorf("digest %s does not match its content (%s)", short(e.Digest), short(d))
	}
	return nil
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// Problems that CheckAuditChain names.
const (
	ProblemAltered   = "altered"       // the digest does not match the entry's content
	ProblemSignature = "signature"     // the device signature is not verified (Detail: the verdict)
	ProblemMissing   = "missing"       // entries FirstSeq..LastSeq are absent
	ProblemLink      = "broken link"   // Prev is not the digest of the entry before
	ProblemReused    = "reused seq"    // two different entries share a seq
	ProblemOrder     = "out of order"  // an entry stands where its seq does not belong
	ProblemUnchained = "unchained"     // the entry carries no chain fields
	ProblemHead      = "head mismatch" // the last entry is not the known head
)

// AuditProblem is one fault in an audit chain, named by its seq range.
type AuditProblem struct {
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Problem  string `json:"problem"`
	Detail   string `json:"detail"`
}

func (p AuditProblem) String() string {
	seq := fmt.Sprintf("seq %d", p.FirstSeq)
	if p.LastSeq != p.FirstSeq {
		seq = fmt.Sprintf("seq %d-%d", p.FirstSeq, p.LastSeq)
	}
	return seq + ": " + p.Problem + ": " + p.Detail
}

// ChainCheck says how to check a chain: the device's announced key
// (base64, "" when unknown) and what to expect before the first entry.
type ChainCheck struct {
	Fleet, Device string
	// DeviceKey checks each entry's Signature (VerifyAudit). Unset with
	// SkipSignatures: the device's own tail, which it never signed.
	DeviceKey      string
	SkipSignatures bool
	// FromStart: the entries begin the chain (seq 1 with Prev ""), so
	// entries missing before the first are named. Otherwise the first
	// entry's Prev is taken on trust (a tail).
	FromStart bool
}

// CheckAuditChain checks entries (in the order they are stored, which
// should be seq order) and names every fault by its seq: an altered
// entry, a bad or missing signature, missing seqs, a broken prev link,
// a reused seq, an entry out of order. Nil: the chain holds.
func CheckAuditChain(c ChainCheck, entries []*AuditEntry) []AuditProblem {
	var out []AuditProblem
	add := func(first, last uint64, problem, detail string) {
		out = append(out, AuditProblem{FirstSeq: first, LastSeq: last, Problem: problem, Detail: detail})
	}
	var prev *AuditEntry
	if c.FromStart && len(entries) > 0 && entries[0].Seq > 1 {
		add(1, entries[0].Seq-1, ProblemMissing, fmt.Sprintf("%d entries before the first stored", entries[0].Seq-1))
	}
	for _, e := range entries {
		if !e.Chained() {
			add(e.Seq, e.Seq, ProblemUnchained, "the entry carries no prev and digest")
			prev = e
			continue
		}
		if err := e.CheckDigest(c.Fleet, c.Device); err != nil {
			add(e.Seq, e.Seq, ProblemAltered, err.Error())
		}
		if !c.SkipSignatures {
			if v, err := Verdict(e.Signature, c.DeviceKey, c.Fleet, c.Device, ChannelAudit); v != VerdictVerified {
				d := v
				if err != nil {
					d = v + ": " + err.Error()
				}
				add(e.Seq, e.Seq, ProblemSignature, d)
			}
		}
		switch {
		case prev == nil:
			if c.FromStart && e.Seq == 1 && e.Prev != "" {
				add(e.Seq, e.Seq, ProblemLink, "the first entry links to "+short(e.Prev))
			}
		case !prev.Chained() && e.Seq == prev.Seq+1 && e.Prev == "":
			// the chain starts after a device's entries from before it
		case e.Seq == prev.Seq && e.Digest == prev.Digest:
			continue // the same entry twice: a redelivery
		case e.Seq == prev.Seq:
			add(e.Seq, e.Seq, ProblemReused, fmt.Sprintf("entries %s and %s share it", short(prev.Digest), short(e.Digest)))
		case e.Seq < prev.Seq:
			add(e.Seq, e.Seq, ProblemOrder, fmt.Sprintf("stands after seq %d", prev.Seq))
		case e.Seq > prev.Seq+1:
			add(prev.Seq+1, e.Seq-1, ProblemMissing, fmt.Sprintf("%d entries between seq %d and seq %d", e.Seq-prev.Seq-1, prev.Seq, e.Seq))
		case e.Prev != prev.Digest:
			add(e.Seq, e.Seq, ProblemLink, fmt.Sprintf("prev %s is not seq %d's digest %s", short(e.Prev), prev.Seq, short(prev.Digest)))
		}
		prev = e
	}
	return out
}

// SortAudit orders entries by seq (stable: a reused seq keeps its order).
func SortAudit(entries []*AuditEntry) {
	slices.SortStableFunc(entries, func(a, b *AuditEntry) int { return cmp.Compare(a.Seq, b.Seq) })
}
