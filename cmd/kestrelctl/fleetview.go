package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// fleetView is what the broker retains for a fleet: each device's state
// (birth or will) and last config report, and each scope's desired
// config and the one before it (config/previous, kept by push for
// rollback).
type fleetView struct {
	fleet      string
	states     map[string]map[string]any
	reports    map[string]*fleet.Report
	desired    map[string]*fleet.ConfigEnvelope // by scope: all, group/G, device/D
	previous   map[string]*fleet.ConfigEnvelope // by scope
	unreadable map[string]string                // device -> why its state did not decode
	// keys are the device keys the state messages announce; a report
	// whose device signature does not check against them is not believed
	// (untrusted: device -> why) and never used.
	keys      deviceKeys
	untrusted map[string]string
}

func newFleetView(fleetID string) *fleetView {
	return &fleetView{fleet: fleetID, states: map[string]map[string]any{}, reports: map[string]*fleet.Report{},
		desired: map[string]*fleet.ConfigEnvelope{}, previous: map[string]*fleet.ConfigEnvelope{}, unreadable: map[string]string{},
		keys: deviceKeys{}, untrusted: map[string]string{}}
}

// fleetViewFilters are the subscriptions that fill a fleetView.
func fleetViewFilters(fleetID string) []string {
	p := fleet.Prefix(fleetID)
	return []string{p + "+/state", p + "+/config/+", p + "_group/+/config/+"}
}

// scopeOfTopic maps kestrel/v1/F/{_all|_group/G|D}/config/{desired|previous}
// to its scope and the last level.
func scopeOfTopic(fleetID, topic string) (scope, kind string, ok bool) {
	rest, found := strings.CutPrefix(topic, fleet.Prefix(fleetID))
	if !found {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 3 && parts[0] == "_all" && parts[1] == "config":
		return "all", parts[2], true
	case len(parts) == 4 && parts[0] == "_group" && parts[2] == "config":
		return "group/" + parts[1], parts[3], true
	case len(parts) == 3 && parts[1] == "config" && !strings.HasPrefix(parts[0], "_"):
		return "device/" + parts[0], parts[2], true
	}
	return "", "", false
}

// addAll files messages, the state messages first: they announce the
// device keys that the reports are checked against.
func (v *fleetView) addAll(msgs []paho.Message) {
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic(), "/"+fleet.ChannelState) {
			v.add(m)
		}
	}
	for _, m := range msgs {
		if !strings.HasSuffix(m.Topic(), "/"+fleet.ChannelState) {
			v.add(m)
		}
	}
}

// judged is a config report and the verdict on its device signature.
type judged struct {
	report  *fleet.Report
	verdict string
	err     error
}

// add files one message; it returns the report, judged, when m is one.
func (v *fleetView) add(m paho.Message) *judged {
	topic := m.Topic()
	if strings.HasSuffix(topic, "/state") {
		v.keys.observe(topic, m.Payload())
		d := deviceOf(topic)
		if d == "" || strings.HasPrefix(d, "_") {
			return nil
		}
		if len(m.Payload()) == 0 {
			delete(v.states, d)
			return nil
		}
		st, err := decodeStateMap(m.Payload())
		if err != nil {
			v.unreadable[d] = err.Error()
			return nil
		}
		v.states[d] = st
		return nil
	}
	scope, kind, ok := scopeOfTopic(v.fleet, topic)
	if !ok {
		return nil
	}
	switch kind {
	case "reported":
		if !strings.HasPrefix(scope, "device/") {
			return nil
		}
		r, err := fleet.DecodeReport(m.Payload())
		if err != nil {
			return nil
		}
		dev := strings.TrimPrefix(scope, "device/")
		j := &judged{report: r}
		j.verdict, j.err = v.keys.verdict(topic, r.Signature)
		if !trusted(j.verdict) {
			v.untrusted[dev] = fmt.Sprintf("%s: %v", j.verdict, j.err)
			delete(v.reports, dev)
			return j
		}
		delete(v.untrusted, dev)
		v.reports[dev] = r
		return j
	case "desired", "previous":
		dst := v.desired
		if kind == "previous" {
			dst = v.previous
		}
		if len(m.Payload()) == 0 {
			delete(dst, scope)
			return nil
		}
		if e, err := fleet.DecodeConfig(m.Payload()); err == nil {
			dst[scope] = e
		}
	}
	return nil
}

// groupsOf is a device's groups: from its last report, else from its
// state message.
func (v *fleetView) groupsOf(dev string) []string {
	if r := v.reports[dev]; r != nil && len(r.Groups) > 0 {
		return r.Groups
	}
	if st := v.states[dev]; st != nil {
		if gs, ok := st["groups"].([]any); ok {
			var out []string
			for _, g := range gs {
				if s, ok := g.(string); ok {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return nil
}

// devices lists every device known from state or reports, sorted.
func (v *fleetView) devices() []string {
	seen := map[string]bool{}
	for d := range v.states {
		seen[d] = true
	}
	for d := range v.reports {
		seen[d] = true
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// members lists the devices a scope reaches, sorted: every known device
// for all, those in the group for group/G, the device itself for device/D.
func (v *fleetView) members(scope string) []string {
	switch {
	case scope == "all":
		return v.devices()
	case strings.HasPrefix(scope, "group/"):
		g := strings.TrimPrefix(scope, "group/")
		var out []string
		for _, d := range v.devices() {
			if slices.Contains(v.groupsOf(d), g) {
				out = append(out, d)
			}
		}
		return out
	}
	return []string{strings.TrimPrefix(scope, "device/")}
}

// online is the state message's online flag; known is false without one.
func (v *fleetView) online(dev string) (on, known bool) {
	st := v.states[dev]
	if st == nil {
		return false, false
	}
	b, ok := st["online"].(bool)
	return b, ok
}
