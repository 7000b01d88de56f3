package fleet

import (
	"slices"
	"strings"
)

// Reaches says whether the manifest is addressed to the device: its fleet
// and a scope of all, one of the device's groups, or the device itself. A
// device takes a release from any of its update/desired topics (its own,
// its groups', the fleet's) when the release reaches it: kestrelctl update
// push stages a group or fleet release by publishing the same signed
// manifest on the staged devices' own topics.
func (r *Release) Reaches(fleetID, device string, groups []string) bool {
	switch {
	case r.Fleet != fleetID:
		return false
	case r.Scope == "all", r.Scope == "device/"+device:
		return true
	case strings.HasPrefix(r.Scope, "group/"):
		return slices.Contains(groups, strings.TrimPrefix(r.Scope, "group/"))
	}
	return false
}

// ReleaseChunkFilter is the subscription to every chunk of the blob with
// the given SHA-256 (ReleaseChunkTopic's index as +).
func ReleaseChunkFilter(fleet, sha256hex string) string {
	return Prefix(fleet) + "_release/" + sha256hex + "/+"
}
