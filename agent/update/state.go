package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kestrel-edge/kestrel/agent/config"
)

const stateFormat = "kestrel-update/1"

// maxStateFile bounds the state file read at start (a manifest, a bitmap of
// at most 64 Ki chunks and a few short strings).
const maxStateFile = 256 << 10

// Installed is a binary the device can run.
type Installed struct {
	Seq     uint64 `json:"seq"`
	Version string `json:"version"`
	SHA256  string `json:"sha256,omitempty"`
	// Slot is "a" or "b"; "" is the package's own binary (no slot).
	Slot string `json:"slot"`
}

// Staging is a download in progress into the inactive slot.
type Staging struct {
	Installed
	// Size and ChunkSize are the download's: the binary's, or the delta's.
	Size      int64 `json:"size"`
	ChunkSize int   `json:"chunk_size"`
	// BlobSHA256, when set, says the download is a delta (of that hash)
	// against the running binary BaseSHA256, which Finish patches into
	// the binary (SHA256, TargetSize bytes).
	BlobSHA256 string `json:"blob_sha256,omitempty"`
	BaseSHA256 string `json:"base_sha256,omitempty"`
	TargetSize int64  `json:"target_size,omitempty"`
	// Have is the bitmap of chunks written and synced to the partial file.
	Have []byte `json:"have"`
	// Manifest is the signed release as received (kept so that the
	// download resumes after a restart without waiting for it again).
	Manifest json.RawMessage `json:"manifest"`
}

// Pending is a release switched to and not yet proved healthy.
type Pending struct {
	Installed
	From Installed `json:"from"`
	// Boots counts the starts of the new slot; a second one reverts.
	Boots int `json:"boots"`
	// Since is when the link was switched (ms since the epoch).
	Since int64 `json:"since"`
	// Reverting is set, with the reason, before the link is switched back.
	Reverting string `json:"reverting,omitempty"`
}

// Result is how the last release ended.
type Result struct {
	Seq     uint64 `json:"seq"`
	Version string `json:"version"`
	State   string `json:"state"` // fleet.UpdateGood, UpdateReverted, UpdateFailed, UpdateRejected
	Reason  string `json:"reason,omitempty"`
	Time    int64  `json:"time"`
	// Reported: the fleet controller has published it.
	Reported bool `json:"reported,omitempty"`
}

// State is the update state file (update.json, 0600).
type State struct {
	Format  string    `json:"format"`
	Running Installed `json:"running"`
	Staging *Staging  `json:"staging,omitempty"`
	Pending *Pending  `json:"pending,omitempty"`
	Last    *Result   `json:"last,omitempty"`
	// Reverted lists the SHA-256 of releases that failed their health
	// gate here (bounded): they are not tried again.
	Reverted []string `json:"reverted,omitempty"`
}

const maxReverted = 16

func loadState(path string) (*State, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("update state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("update state: %w", err)
	}
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("update state %s: larger than %d bytes", path, maxStateFile)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("update state %s: %w", path, err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("update state %s: format %q, want %q", path, st.Format, stateFormat)
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("update state %s: %w", path, err)
	}
	return &st, nil
}

func (st *State) check() error {
	for _, s := range []string{st.Running.Slot} {
		if !validSlot(s) {
			return fmt.Errorf("slot %q", s)
		}
	}
	if s := st.Staging; s != nil {
		if !isSlot(s.Slot) || s.Size <= 0 || s.ChunkSize <= 0 || len(s.Have) != (chunks(s.Size, s.ChunkSize)+7)/8 {
			return errors.New("staging record is inconsistent")
		}
	}
	if p := st.Pending; p != nil && (!isSlot(p.Slot) || !validSlot(p.From.Slot)) {
		return errors.New("pending record is inconsistent")
	}
	return nil
}

func (st *State) save(path string) error {
	st.Format = stateFormat
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return config.WriteAtomic(path, b, 0o600)
}

func isSlot(s string) bool    { return s == "a" || s == "b" }
func validSlot(s string) bool { return s == "" || isSlot(s) }

func chunks(size int64, chunkSize int) int {
	if size <= 0 || chunkSize <= 0 {
		return 0
	}
	return int((size + int64(chunkSize) - 1) / int64(chunkSize))
}

// blobSHA256 is the hash of what is downloaded.
func (s *Staging) blobSHA256() string {
	if s.BlobSHA256 != "" {
		return s.BlobSHA256
	}
	return s.SHA256
}
