package fleet

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// Report statuses on config/reported.
const (
	StatusApplied    = "applied"
	StatusRejected   = "rejected"
	StatusRolledBack = "rolled_back"
)

// Reply statuses.
const (
	ReplyOK       = "ok"
	ReplyError    = "error"    // the command ran and failed
	ReplyRejected = "rejected" // the command was refused before it ran
)

// Report is the retained config/reported message (JSON): the outcome of the
// last config attempt, and the version running now.
type Report struct {
	Device  string        `json:"device"`
	Fleet   string        `json:"fleet"`
	Version uint64        `json:"version"` // the version this report is about; 0 if unreadable
	Status  string        `json:"status"`
	Errors  []ReportError `json:"errors,omitempty"`
	Running uint64        `json:"running_version"`
	Scope   string        `json:"scope,omitempty"`
	KeyID   string        `json:"kid,omitempty"`
	Groups  []string      `json:"groups,omitempty"` // so that kestrelctl knows who to wait for
	// Changes are the keys an applied config changed, each with how it
	// applies (live, or restart: in force from the next start).
	Changes []config.Change `json:"changes,omitempty"`
	// Layers are the remote scopes in force and their versions.
	Layers map[string]uint64 `json:"layers,omitempty"`
	// Effective is the running config, key by key, with where each value
	// came from (kestrelctl config get --effective).
	Effective []EffectiveKey `json:"effective,omitempty"`
	Time      int64          `json:"time"` // ms since the epoch
	// Signature is the device's signature found by DecodeReport (nil:
	// unsigned); check it with Verdict.
	Signature *DeviceSignature `json:"-"`
}

// EffectiveKey is one key of the running config and its origin.
type EffectiveKey struct {
	Path    string `json:"path"`
	Value   string `json:"value"`
	Scope   string `json:"scope"` // local, all, group/NAME, device/ID
	Version uint64 `json:"version,omitempty"`
}

// ReportError is one problem, with the config key path when it is about one
// key.
type ReportError struct {
	Path  string `json:"path,omitempty"`
	Error string `json:"error"`
}

// ReportErrors flattens an error tree into report errors with key paths.
func ReportErrors(err error) []ReportError {
	if err == nil {
		return nil
	}
	var out []ReportError
	for _, fe := range config.FieldErrors(err) {
		msg := fe.Err.Error()
		if fe.Path == "" {
			msg = fe.Error()
		}
		out = append(out, ReportError{Path: fe.Path, Error: msg})
	}
	return out
}

// AuditEntry is one config or command attempt, accepted or not, or a
// privacy change, a rollback, a state repair. Entries are kept on the
// device (bounded, in the state file) and published on the audit channel,
// sealed with the device key. Seq grows by one per entry, across restarts,
// so gaps are visible; Prev and Digest chain the entries (audit.go,
// docs/audit.md). The "junk" summary is outside the chain (seq 0).
type AuditEntry struct {
	Seq     uint64 `json:"seq"`
	Time    int64  `json:"time"` // ms since the epoch
	Kind    string `json:"kind"` // config, command, rollback, reload, state, junk
	Scope   string `json:"scope,omitempty"`
	KeyID   string `json:"kid,omitempty"`
	Version uint64 `json:"version,omitempty"`
	ID      string `json:"id,omitempty"`   // command request id
	Name    string `json:"name,omitempty"` // command name
	Result  string `json:"result"`         // applied, rejected, rolled_back, ok, error
	Error   string `json:"error,omitempty"`
	// Verified: KeyID is the signer whose signature checked out.
	Verified bool `json:"verified,omitempty"`
	// Signers are the distinct trusted keys whose signatures counted
	// towards the threshold (remote.config_threshold, command_threshold).
	Signers []string `json:"signers,omitempty"`
	// Changes are the keys an applied config changed, key by key.
	Changes []config.Change `json:"changes,omitempty"`
	// Count, for kind "junk": unverified messages refused since the
	// device's first junk (the summary replaces itself, never an entry).
	Count   uint64            `json:"count,omitempty"`
	Reasons map[string]uint64 `json:"reasons,omitempty"`
	// By says who acted: the verified key ids that signed the config or
	// command, else ByLocal, ByDevice or ByUnsigned.
	By []string `json:"by,omitempty"`
	// Diff is what a config change (applied, or rolled back) changed, key
	// by key, secrets redacted.
	Diff []AuditDiff `json:"diff,omitempty"`
	// Args are a command's arguments, secrets redacted.
	Args map[string]string `json:"args,omitempty"`
	// Prev is the previous entry's digest ("" for the first); Digest is
	// this entry's (AuditDigest).
	Prev   string `json:"prev,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Signature is the device's signature found by DecodeAudit (nil:
	// unsigned) and Body the entry's JSON as it arrived, which the
	// signature and the digest cover.
	Signature *DeviceSignature `json:"-"`
	Body      []byte           `json:"-"`
}

// Reply answers a command, on the command's reply channel.
type Reply struct {
	ID     string          `json:"id"`
	Name   string          `json:"name,omitempty"`
	Device string          `json:"device"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Time   int64           `json:"time"`
	// Signature is the device's signature found by DecodeReply (nil:
	// unsigned); check it with Verdict.
	Signature *DeviceSignature `json:"-"`
}

// DecodeReport, DecodeReply and DecodeAudit parse the device's messages
// (for kestrelctl and tests).
func DecodeReport(b []byte) (*Report, error) {
	body, sig, err := Open(b)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	r.Signature = sig
	if r.Status == "" {
		return nil, errors.New("report without status")
	}
	return &r, nil
}

func DecodeReply(b []byte) (*Reply, error) {
	body, sig, err := Open(b)
	if err != nil {
		return nil, err
	}
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	r.Signature = sig
	if r.ID == "" || r.Status == "" {
		return nil, errors.New("reply without id or status")
	}
	return &r, nil
}

// DecodeAudit reads a sealed entry or an unsigned one (from a device from
// before signing); check the signature with Verdict and the chain with
// CheckAuditChain.
func DecodeAudit(b []byte) (*AuditEntry, error) {
	body, sig, err := Open(b)
	if err != nil {
		return nil, err
	}
	var a AuditEntry
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("%w: audit entry: %v", ErrMalformed, err)
	}
	if a.Kind == "" || len(a.Prev) > 128 || len(a.Digest) > 128 {
		return nil, fmt.Errorf("%w: audit entry without a kind, or with an oversize digest", ErrMalformed)
	}
	a.Signature, a.Body = sig, body
	return &a, nil
}
