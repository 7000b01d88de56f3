package update

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// runningSHA256 is the running binary's hash: from the state, or hashed
// once (the package's binary comes without a manifest). Callers hold u.mu.
func (u *Updater) runningSHA256() string {
	if u.st.Running.SHA256 != "" && u.st.Running.Slot == u.self {
		return u.st.Running.SHA256
	}
	if u.selfSHA == "" {
		if sum, _, err := hashFile(u.exe); err == nil {
			u.selfSHA = sum
		}
	}
	return u.selfSHA
}

// Stage begins, or resumes, the download of a verified manifest: its
// delta when the manifest has one against the running binary and this
// updater can patch, else the whole binary.
func (u *Updater) Stage(r *fleet.Release, raw []byte) error {
	rel := FromManifest(r, raw)
	if d := r.Delta; d != nil && u.patch != nil {
		u.mu.Lock()
		ok := !u.noDelta[r.SHA256] && d.BaseSHA256 == u.runningSHA256()
		u.mu.Unlock()
		if ok {
			rel.BlobSHA256, rel.BaseSHA256, rel.TargetSize, rel.Size = d.SHA256, d.BaseSHA256, r.Size, d.Size
		}
	}
	return u.Begin(rel)
}

// StagingBlobSHA256 is the hash of what is being downloaded (the binary's,
// or its delta's: the chunk topics are named by it); "" for none.
func (u *Updater) StagingBlobSHA256() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Staging == nil {
		return ""
	}
	return u.st.Staging.blobSHA256()
}

// applyDelta turns the verified delta in part into the release's binary,
// from the running binary, and checks the result's hash and size.
// Callers hold u.mu.
func (u *Updater) applyDelta(s *Staging, part string) error {
	if u.patch == nil {
		return fmt.Errorf("no patcher")
	}
	old, err := readBounded(u.exe, fleet.MaxReleaseSize)
	if err != nil {
		return fmt.Errorf("base binary: %w", err)
	}
	if sum := sha256.Sum256(old); hex.EncodeToString(sum[:]) != s.BaseSHA256 {
		return fmt.Errorf("base binary %s is not the delta's base %s", u.exe, s.BaseSHA256)
	}
	patch, err := readBounded(part, fleet.MaxReleaseSize)
	if err != nil {
		return err
	}
	out, err := u.patch(old, patch, s.TargetSize)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(out); hex.EncodeToString(sum[:]) != s.SHA256 || int64(len(out)) != s.TargetSize {
		return fmt.Errorf("%w: the patched binary is %d bytes with sha256 %s, manifest says %d bytes with %s", ErrMismatch, len(out), hex.EncodeToString(sum[:]), s.TargetSize, s.SHA256)
	}
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	crashPoint("patched")
	return f.Close()
}
