package update

import (
	"runtime"
	"runtime/debug"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// ThisPlatform is the running binary's target as a release names it
// (GOARM from the build settings on arm).
func ThisPlatform() fleet.Platform {
	p := fleet.Platform{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if p.GOARCH == "arm" {
		p.GOARM = "7" // Go's default for linux/arm when GOARM is unset
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" {
					p.GOARM = s.Value[:1] // "7" of "7,softfloat"
				}
			}
		}
	}
	return p
}

// RunningSeq is the release number in force: the anti-rollback counter.
func (u *Updater) RunningSeq() uint64 { return u.Running().Seq }

// RunningSHA256 is the hash of the binary in force ("" for the package's,
// which came without a manifest).
func (u *Updater) RunningSHA256() string { return u.Running().SHA256 }

// StagingSHA256 is the hash of the binary being downloaded ("": none).
func (u *Updater) StagingSHA256() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.st.Staging == nil {
		return ""
	}
	return u.st.Staging.SHA256
}

// PendingSeq is the release this process must health-gate (ok false: none).
func (u *Updater) PendingSeq() (uint64, bool) {
	p, ok := u.PendingVerify()
	return p.Seq, ok
}

// Report is where the device is with its latest release: the pending one,
// the download, or the last result. final says it is a result not yet
// published (MarkReported records that it was).
func (u *Updater) Report() (r fleet.UpdateReport, final bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.st
	r.Running, r.RunningVersion = st.Running.Seq, st.Running.Version
	switch {
	case st.Pending != nil:
		r.Seq, r.Version, r.State = st.Pending.Seq, st.Pending.Version, fleet.UpdatePendingVerify
	case st.Staging != nil:
		s := st.Staging
		r.Seq, r.Version, r.State, r.Size, r.Delta = s.Seq, s.Version, fleet.UpdateDownloading, s.Size, s.BlobSHA256 != ""
		n := chunks(s.Size, s.ChunkSize)
		for i := 0; i < n; i++ {
			if s.Have[i/8]&(1<<(i%8)) != 0 {
				r.Have += chunkLen(s.Size, s.ChunkSize, i)
			}
		}
	case st.Last != nil:
		r.Seq, r.Version, r.State, r.Reason = st.Last.Seq, st.Last.Version, st.Last.State, st.Last.Reason
		final = !st.Last.Reported
	default:
		r.Seq, r.Version, r.State = st.Running.Seq, st.Running.Version, fleet.UpdateGood
	}
	return r, final
}

// Status is the state message's "release_seq" (the release running) and
// "update" fields.
func (u *Updater) Status() (uint64, any) {
	r, _ := u.Report()
	m := map[string]any{"state": r.State, "seq": r.Seq, "version": r.Version, "running_seq": r.Running, "running_version": r.RunningVersion, "slot": u.self}
	if r.Size > 0 {
		m["have"], m["size"] = r.Have, r.Size
	}
	if r.Reason != "" {
		m["reason"] = r.Reason
	}
	return r.Running, m
}
