package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// A dry run computes, per device, what a push would change in its
// effective config. The device's last report gives its running config key
// by key with the scope each value came from (fleet.EffectiveKey) and
// the layer versions in force; the broker's retained desired configs give
// the bodies of the other scopes. Scopes lay over the local file in the
// device's order: all, each group in device.groups order, the device.

// keyChange is one key a push would change on one device.
type keyChange struct {
	Path     string `json:"path"`
	Old      string `json:"old"`
	OldScope string `json:"old_scope"`
	New      string `json:"new"`
	NewScope string `json:"new_scope"`
	// Unknown: the key falls back to the device's local file, whose
	// value kestrelctl cannot see; New is then empty.
	Unknown bool `json:"unknown,omitempty"`
}

// deviceDiff is one device's dry-run result.
type deviceDiff struct {
	Device  string      `json:"device"`
	Online  *bool       `json:"online,omitempty"`
	Changes []keyChange `json:"changes"`
	// Shadowed are keys the push sets that a higher scope on this device
	// overrides: they would not change.
	Shadowed []string `json:"shadowed,omitempty"`
	// Note qualifies the diff (a device that has not reported yet).
	Note string `json:"note,omitempty"`
	// Error says why no diff could be computed.
	Error string `json:"error,omitempty"`
}

// scopeOrder is a device's layer order, lowest first.
func scopeOrder(dev string, groups []string) []string {
	order := []string{"all"}
	for _, g := range groups {
		order = append(order, "group/"+g)
	}
	return append(order, "device/"+dev)
}

// bodyValues returns the keys a partial config body sets and their values
// as --set would write them.
func bodyValues(body []byte) (map[string]string, error) {
	c, keys, err := config.Overlay(config.Defaults(), body)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		v, err := config.Get(c, k)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// dryRunDevice computes what laying body at scope would change on dev.
func dryRunDevice(v *fleetView, dev, scope string, body []byte) deviceDiff {
	dd := deviceDiff{Device: dev, Changes: []keyChange{}}
	if on, known := v.online(dev); known {
		dd.Online = &on
	}
	next, err := bodyValues(body)
	if err != nil {
		dd.Error = err.Error()
		return dd
	}
	r := v.reports[dev]
	if r == nil || len(r.Effective) == 0 {
		// A device that never answered a config runs no remote layer, but
		// its local values are not known here.
		dd.Note = "no config report from this device yet: its current values are not known"
		for _, k := range sortedKeys(next) {
			dd.Changes = append(dd.Changes, keyChange{Path: k, Old: "?", OldScope: "local", New: next[k], NewScope: scope})
		}
		return dd
	}
	order := scopeOrder(dev, r.Groups)
	rank := func(s string) int { return slices.Index(order, s) } // local: -1
	target := rank(scope)
	if target < 0 {
		dd.Error = fmt.Sprintf("%s does not reach this device", scope)
		return dd
	}
	// The bodies of the scopes below the target, as the device runs them.
	lower := map[string]map[string]string{}
	for _, s := range order[:target] {
		e := v.desired[s]
		if e == nil || r.Layers[s] == 0 || e.Version != r.Layers[s] {
			continue // not retained, or not the version the device runs
		}
		if vals, err := bodyValues(e.Body); err == nil {
			lower[s] = vals
		}
	}
	for _, k := range r.Effective {
		newVal, sets := next[k.Path]
		cur := rank(k.Scope)
		switch {
		case cur > target:
			if sets {
				dd.Shadowed = append(dd.Shadowed, k.Path+" (by "+k.Scope+")")
			}
		case sets:
			if newVal != k.Value || k.Scope != scope {
				dd.Changes = append(dd.Changes, keyChange{Path: k.Path, Old: k.Value, OldScope: scopeLabel(k.Scope, k.Version),
					New: newVal, NewScope: scope})
			}
		case cur == target:
			// The scope no longer sets it: the next layer down that does.
			kc := keyChange{Path: k.Path, Old: k.Value, OldScope: scopeLabel(k.Scope, k.Version), NewScope: "local", Unknown: true}
			for i := target - 1; i >= 0; i-- {
				if val, ok := lower[order[i]][k.Path]; ok {
					kc.New, kc.NewScope, kc.Unknown = val, scopeLabel(order[i], r.Layers[order[i]]), false
					break
				}
			}
			dd.Changes = append(dd.Changes, kc)
		}
	}
	sort.Slice(dd.Changes, func(i, j int) bool { return dd.Changes[i].Path < dd.Changes[j].Path })
	return dd
}

func scopeLabel(scope string, version uint64) string {
	if version == 0 {
		return scope
	}
	return fmt.Sprintf("%s v%d", scope, version)
}

// dryRunResult is what push --dry-run prints (--json: this object).
type dryRunResult struct {
	DryRun  bool         `json:"dry_run"`
	Target  string       `json:"target"`
	Topic   string       `json:"topic"`
	Version uint64       `json:"version"`
	Devices []deviceDiff `json:"devices"`
}

func printDryRun(w io.Writer, res dryRunResult) {
	fmt.Fprintf(w, "dry run: version %d to %s (%s); nothing published\n", res.Version, res.Target, res.Topic)
	for _, d := range res.Devices {
		state := ""
		if d.Online != nil && !*d.Online {
			state = " (offline: applies when it reconnects)"
		}
		fmt.Fprintf(w, "\n# %s%s\n", d.Device, state)
		if d.Error != "" {
			fmt.Fprintf(w, "unknown: %s\n", d.Error)
			continue
		}
		if d.Note != "" {
			fmt.Fprintln(w, d.Note)
		}
		if len(d.Changes) == 0 {
			fmt.Fprintln(w, "no change")
		} else {
			tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tOLD\tFROM\t\tNEW\tFROM")
			for _, c := range d.Changes {
				nv := c.New
				if c.Unknown {
					nv = "(local file)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t->\t%s\t%s\n", c.Path, orDash(c.Old), c.OldScope, orDash(nv), c.NewScope)
			}
			tw.Flush()
		}
		if len(d.Shadowed) > 0 {
			fmt.Fprintf(w, "unchanged, a higher scope sets them: %s\n", strings.Join(d.Shadowed, ", "))
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
