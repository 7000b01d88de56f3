package fleet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Release manifests (kestrel-release/1, docs/ota.md): a signed statement
// that a binary of a given SHA-256 and size is release number Seq of the
// agent for one target platform, addressed to a fleet, group or device.
// The binary (or a delta against a named base) travels separately, in
// retained chunks on ReleaseChunkTopic, or from URL over HTTPS.
//
// Topics:
//
//	kestrel/v1/{fleet}/_all/update/desired            retained, a Release
//	kestrel/v1/{fleet}/_group/{name}/update/desired   retained, a Release
//	kestrel/v1/{fleet}/{device}/update/desired        retained, a Release
//	kestrel/v1/{fleet}/_release/{sha256}/{index}      retained, chunk bytes
//	kestrel/v1/{fleet}/{device}/update/reported       retained, device → manager
const (
	ChannelUpdateDesired  = "update/desired"
	ChannelUpdateReported = "update/reported"
	releaseFormat         = "kestrel-release/1"

	// MaxRelease bounds a manifest's JSON.
	MaxRelease = 16 << 10
	// MaxReleaseSize bounds the binary (and a delta) a manifest may name.
	MaxReleaseSize = 64 << 20
	// MinChunkSize and MaxChunkSize bound Release.ChunkSize; a chunk
	// message carries exactly ChunkSize bytes, the last one the rest.
	MinChunkSize = 1 << 10
	MaxChunkSize = 256 << 10
	// DeltaFormat is the one delta format (transport/delta: bsdiff's
	// control, diff and extra streams, zstd-compressed).
	DeltaFormat = "kestrel-bsdiff/1"
	// DefaultChunkSize fits a narrowband link's bulk lane.
	DefaultChunkSize = 16 << 10
)

// Release errors, besides ErrMalformed, ErrTooLarge and the signature ones.
var (
	ErrReleaseExpired = errors.New("release manifest expired")
	ErrDowngrade      = errors.New("release is not newer than the running one and does not allow a downgrade")
	ErrWrongPlatform  = errors.New("release is for another platform")
	ErrTooOld         = errors.New("running release is older than the manifest's minimum")
	// ErrDeltaFailed: a delta did not give the release's binary on the
	// device, which then fetches the whole binary.
	ErrDeltaFailed = errors.New("delta did not apply")
)

// Release is a signed release manifest as published on update/desired.
type Release struct {
	Format  string `json:"kestrel"`
	Fleet   string `json:"fleet"`
	Scope   string `json:"target"` // all, group/NAME, device/ID
	Version string `json:"version"`
	// Seq is the release number: the anti-rollback counter. A device
	// installs a release only if Seq is above its running one, unless
	// AllowDowngrade is signed in.
	Seq    uint64 `json:"seq"`
	GOOS   string `json:"goos"`
	GOARCH string `json:"goarch"`
	GOARM  string `json:"goarm,omitempty"` // "5", "6", "7" for arm; empty otherwise
	SHA256 string `json:"sha256"`          // of the whole binary, hex
	Size   int64  `json:"size"`
	// ChunkSize is the size of every chunk but the last on ReleaseChunkTopic.
	ChunkSize int `json:"chunk_size"`
	// MinFromSeq: devices running an older release refuse (0: any).
	MinFromSeq uint64 `json:"min_from_seq,omitempty"`
	// SpoolFormats are the spool formats the release reads; a device
	// whose spool is in another format refuses the update.
	SpoolFormats   []int       `json:"spool_formats"`
	Expires        int64       `json:"expires"` // ms since the epoch
	Issued         int64       `json:"issued"`  // ms since the epoch
	AllowDowngrade bool        `json:"allow_downgrade,omitempty"`
	URL            string      `json:"url,omitempty"` // https:// alternative to the chunks
	Delta          *Delta      `json:"delta,omitempty"`
	Notes          string      `json:"notes,omitempty"`
	KeyID          string      `json:"kid,omitempty"`
	Sig            []byte      `json:"sig,omitempty"`
	Cosigs         []Signature `json:"cosigs,omitempty"`
}

// Delta names a binary delta that turns the base release's binary into this
// one. A device running BaseSeq with BaseSHA256 may fetch the delta's chunks
// (on ReleaseChunkTopic of the delta's SHA256) instead of the whole binary.
type Delta struct {
	Format     string `json:"format"` // DeltaFormat
	BaseSeq    uint64 `json:"base_seq"`
	BaseSHA256 string `json:"base_sha256"`
	SHA256     string `json:"sha256"` // of the delta blob
	Size       int64  `json:"size"`
}

// UpdateTopic is the retained topic that carries the target's release.
func (t Target) UpdateTopic() string {
	return strings.TrimSuffix(t.Topic(), ChannelDesired) + ChannelUpdateDesired
}

// ReleaseChunkTopic carries chunk index of the blob with the given SHA-256
// (the binary's, or a delta's), retained.
func ReleaseChunkTopic(fleet, sha256hex string, index int) string {
	return Prefix(fleet) + "_release/" + sha256hex + "/" + strconv.Itoa(index)
}

// Chunks is the number of chunks of a blob of size bytes.
func Chunks(size int64, chunkSize int) int {
	if size <= 0 || chunkSize <= 0 {
		return 0
	}
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

// Target returns the manifest's target.
func (r *Release) Target() Target { return Target{r.Fleet, r.Scope} }

// Signers are the key ids that signed the manifest.
func (r *Release) Signers() []string { return signerIDs(signatures(r.KeyID, r.Sig, r.Cosigs)) }

// signed is the manifest without its signatures, in a canonical encoding
// (Go's JSON of the struct, fields in declaration order).
func (r *Release) signed() []byte {
	c := *r
	c.KeyID, c.Sig, c.Cosigs = "", nil, nil
	b, _ := json.Marshal(&c)
	return append([]byte(releaseFormat+"\n"), b...)
}

// SignRelease fills Format and Issued (if zero), checks the manifest and
// signs it with every key; it returns the JSON to publish on
// r.Target().UpdateTopic().
func SignRelease(keys []ed25519.PrivateKey, r Release) ([]byte, error) {
	r.Format = releaseFormat
	if r.Issued == 0 {
		r.Issued = time.Now().UnixMilli()
	}
	r.KeyID, r.Sig, r.Cosigs = "", nil, nil
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("sign release: %w", err)
	}
	sigs, err := signAll(keys, r.signed())
	if err != nil {
		return nil, fmt.Errorf("sign release: %w", err)
	}
	if len(sigs) == 0 {
		return nil, errors.New("sign release: a release must be signed")
	}
	r.KeyID, r.Sig, r.Cosigs = sigs[0].KeyID, sigs[0].Sig, sigs[1:]
	return json.Marshal(&r)
}

// DecodeRelease parses a manifest strictly. It checks the shape, not the
// signature (Keyring.VerifyRelease does) nor whether it suits the device
// (CheckInstall does).
func DecodeRelease(payload []byte) (*Release, error) {
	if len(payload) > MaxRelease {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxRelease)
	}
	var r Release
	if err := strictJSON(payload, &r); err != nil {
		return nil, err
	}
	if r.Format != releaseFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrMalformed, r.Format, releaseFormat)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := checkSigs(r.KeyID, r.Sig, r.Cosigs); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Release) check() error {
	if err := r.Target().check(); err != nil {
		return err
	}
	switch {
	case r.Version == "" || len(r.Version) > 64:
		return fmt.Errorf("version %q", r.Version)
	case r.Seq == 0:
		return errors.New("seq must be at least 1")
	case r.GOOS == "" || r.GOARCH == "" || len(r.GOOS)+len(r.GOARCH)+len(r.GOARM) > 48:
		return errors.New("goos and goarch are required")
	case r.GOARCH == "arm" && (r.GOARM < "5" || r.GOARM > "7" || len(r.GOARM) != 1):
		return fmt.Errorf("goarm %q: want 5, 6 or 7 for arm", r.GOARM)
	case r.GOARCH != "arm" && r.GOARM != "":
		return fmt.Errorf("goarm %q is for arm only", r.GOARM)
	case !isSHA256(r.SHA256):
		return fmt.Errorf("sha256 %q: want 64 hex digits", r.SHA256)
	case r.Size <= 0 || r.Size > MaxReleaseSize:
		return fmt.Errorf("size %d: want 1..%d", r.Size, MaxReleaseSize)
	case r.ChunkSize < MinChunkSize || r.ChunkSize > MaxChunkSize:
		return fmt.Errorf("chunk_size %d: want %d..%d", r.ChunkSize, MinChunkSize, MaxChunkSize)
	case len(r.SpoolFormats) == 0 || len(r.SpoolFormats) > 16:
		return errors.New("spool_formats: name 1 to 16 formats the release reads")
	case r.Expires <= r.Issued:
		return errors.New("expires must be after issued")
	case r.URL != "" && (!strings.HasPrefix(r.URL, "https://") || len(r.URL) > 1024):
		return fmt.Errorf("url %q: want https:// (at most 1024 bytes)", r.URL)
	case len(r.Notes) > 1024:
		return errors.New("notes longer than 1024 bytes")
	}
	if d := r.Delta; d != nil {
		switch {
		case d.Format != DeltaFormat:
			return fmt.Errorf("delta format %q: want %s", d.Format, DeltaFormat)
		case d.BaseSeq == 0 || d.BaseSeq >= r.Seq:
			return fmt.Errorf("delta base_seq %d: want 1..%d", d.BaseSeq, r.Seq-1)
		case !isSHA256(d.BaseSHA256) || !isSHA256(d.SHA256):
			return errors.New("delta base_sha256 and sha256: want 64 hex digits")
		case d.Size <= 0 || d.Size > MaxReleaseSize:
			return fmt.Errorf("delta size %d: want 1..%d", d.Size, MaxReleaseSize)
		}
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// VerifyRelease checks the manifest's signatures: at least threshold
// distinct trusted keys with the release role. It returns the key ids that
// counted. A release is always signed.
func (kr Keyring) VerifyRelease(r *Release, threshold int) ([]string, error) {
	return kr.verify(signatures(r.KeyID, r.Sig, r.Cosigs), r.signed(), true, RoleRelease, threshold)
}

// Platform is the running binary's target, as a release names it.
type Platform struct{ GOOS, GOARCH, GOARM string }

// CheckInstall says whether a verified manifest may be installed on a
// device running release runningSeq on platform p with a spool in format
// spoolFormat, at time now.
func (r *Release) CheckInstall(p Platform, runningSeq uint64, spoolFormat int, now time.Time) error {
	switch {
	case now.UnixMilli() >= r.Expires:
		return fmt.Errorf("%w at %s", ErrReleaseExpired, time.UnixMilli(r.Expires).UTC().Format(time.RFC3339))
	case p.GOOS != r.GOOS || p.GOARCH != r.GOARCH || (r.GOARCH == "arm" && p.GOARM != r.GOARM):
		return fmt.Errorf("%w: %s/%s%s, this device is %s/%s%s", ErrWrongPlatform, r.GOOS, r.GOARCH, armSuffix(r.GOARM), p.GOOS, p.GOARCH, armSuffix(p.GOARM))
	case r.Seq <= runningSeq && !r.AllowDowngrade:
		return fmt.Errorf("%w: release %d (%s), running %d", ErrDowngrade, r.Seq, r.Version, runningSeq)
	case r.MinFromSeq != 0 && runningSeq < r.MinFromSeq:
		return fmt.Errorf("%w: running %d, minimum %d", ErrTooOld, runningSeq, r.MinFromSeq)
	}
	for _, f := range r.SpoolFormats {
		if f == spoolFormat {
			return nil
		}
	}
	return fmt.Errorf("%w: release reads spool formats %v, this spool is format %d", ErrMalformed, r.SpoolFormats, spoolFormat)
}

func armSuffix(goarm string) string {
	if goarm == "" {
		return ""
	}
	return "v" + goarm
}

// UpdateReport is the retained update/reported message (JSON): where the
// device is with the latest release it was given.
type UpdateReport struct {
	Device  string `json:"device"`
	Fleet   string `json:"fleet"`
	Seq     uint64 `json:"seq"`     // the release this report is about
	Version string `json:"version"` // its version string
	// State: downloading, verifying, staged, pending_verify, good,
	// rejected, failed, reverted.
	State          string `json:"state"`
	Have           int64  `json:"have,omitempty"` // bytes received
	Size           int64  `json:"size,omitempty"` // bytes to receive (binary or delta)
	Delta          bool   `json:"delta,omitempty"`
	Reason         string `json:"reason,omitempty"` // why rejected, failed or reverted
	Running        uint64 `json:"running_seq"`      // the release running now
	RunningVersion string `json:"running_version,omitempty"`
	Time           int64  `json:"time"` // ms since the epoch
	// Signature is the device's signature found by DecodeUpdateReport.
	Signature *DeviceSignature `json:"-"`
}

// Update states.
const (
	UpdateDownloading   = "downloading"
	UpdateVerifying     = "verifying"
	UpdateStaged        = "staged"
	UpdatePendingVerify = "pending_verify"
	UpdateGood          = "good"
	UpdateRejected      = "rejected"
	UpdateFailed        = "failed"
	UpdateReverted      = "reverted"
)

// DecodeUpdateReport parses an update/reported message (sealed by the
// device key, or bare).
func DecodeUpdateReport(b []byte) (*UpdateReport, error) {
	body, sig, err := Open(b)
	if err != nil {
		return nil, err
	}
	var r UpdateReport
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	r.Signature = sig
	return &r, nil
}
