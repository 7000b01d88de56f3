package fleetctl

import (
	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// effectiveKeys lists every key of c with its origin: the remote layer
// that set it, else "local" (the file, --set or the default).
func effectiveKeys(c config.Config, origins map[string]Origin) []fleet.EffectiveKey {
	var out []fleet.EffectiveKey
	for _, p := range config.Paths() {
		if p == "version" {
			continue
		}
		v, _ := config.Get(c, p)
		o, ok := origins[p]
		if !ok {
			o = Origin{Scope: "local"}
		}
		out = append(out, fleet.EffectiveKey{Path: p, Value: v, Scope: o.Scope, Version: o.Version})
	}
	return out
}
