package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/kestrel-edge/kestrel"

// moduleDeps runs go list over the patterns and returns, for each package
// of the module they match, the module's packages it builds with
// (transitively, tests excluded), all as paths inside the module.
func moduleDeps(t *testing.T, patterns ...string) map[string][]string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(gobin); err != nil {
		gobin = "go"
	}
	args := []string{"list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}"}
	for _, p := range patterns {
		args = append(args, module+"/"+p)
	}
	b, err := exec.Command(gobin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	inModule := func(p string) (string, bool) {
		if p == module {
			return ".", true
		}
		return strings.CutPrefix(p, module+"/")
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		pkg, ok := inModule(f[0])
		if !ok {
			continue
		}
		out[pkg] = []string{}
		for _, d := range f[1:] {
			if d, ok := inModule(d); ok {
				out[pkg] = append(out[pkg], d)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("go list matched nothing for %v", patterns)
	}
	return out
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// TestKestrelctlImportsNoDeviceInternals: the fleet tool builds on the
// protocol (transport/fleet) and the config schema that both ends share
// (agent/config), never on the device's internals.
func TestKestrelctlImportsNoDeviceInternals(t *testing.T) {
	for _, p := range moduleDeps(t, "cmd/kestrelctl")["cmd/kestrelctl"] {
		if under(p, "agent") && !under(p, "agent/config") {
			t.Errorf("kestrelctl depends on %s: of agent/, only agent/config may be shared", p)
		}
	}
}

// TestConfigPathOneWay: a config change runs transport → controller →
// agent → units, never back. The protocol and the transports import no
// controller and no agent; the controller (agent/fleetctl) imports nothing
// of the agent and reaches it only through its Door; the agent and its
// units never import the controller; the schema (agent/config) imports
// nothing of agent/.
func TestConfigPathOneWay(t *testing.T) {
	deps := moduleDeps(t, "transport/...", "agent/...")
	for pkg, ds := range deps {
		for _, d := range ds {
			var bad bool
			switch {
			case under(pkg, "transport"), pkg == "agent/fleetctl", pkg == "agent/config":
				bad = under(d, "agent") && !under(d, "agent/config")
			default: // the agent and its units
				bad = d == "agent/fleetctl"
			}
			if bad {
				t.Errorf("%s depends on %s: the config path must run one way (transport → controller → agent → units)", pkg, d)
			}
		}
	}
	for _, must := range []string{"transport/fleet", "agent/fleetctl", "agent", "agent/config"} {
		if _, ok := deps[must]; !ok {
			t.Errorf("go list did not list %s", must)
		}
	}
}
