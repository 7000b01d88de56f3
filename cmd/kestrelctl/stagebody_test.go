package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestStageBody: the device's own keys win, shadowed keys are left out,
// the scope's other keys are added.
func TestStageBody(t *testing.T) {
	own := []byte("[tracking]\nmax_interval = \"30s\"\n")
	scope := []byte("[tracking]\nmax_interval = \"50s\"\ndistance = 55.0\n[privacy]\nmode = \"coarse\"\n")
	b, err := stageBody(own, scope, func(p string) bool { return p == "privacy.mode" })
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := toml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"tracking": map[string]any{"max_interval": "30s", "distance": 55.0}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\n%s", got, b)
	}
	vals, err := bodyValues(b)
	if err != nil || vals["tracking.distance"] != "55" || vals["tracking.max_interval"] != "30s" {
		t.Fatalf("the staged body does not read back as config: %v %v", vals, err)
	}
}

func TestPlanStages(t *testing.T) {
	for _, c := range []struct {
		total, canary int
		stages        string
		ends          []int
		names         string
	}{
		{10, 1, "10%,50%,100%", []int{1, 5, 10}, "canary 50% 100%"},
		{3, 1, "50%,100%", []int{1, 2, 3}, "canary 50% 100%"},
		{4, 2, "", []int{2, 4}, "canary 100%"},
		{5, 0, "1,3", []int{1, 3, 5}, "1 3 100%"},
		{1, 5, "", []int{1}, "canary"},
	} {
		specs, err := parseStages(c.stages)
		if err != nil {
			t.Fatal(err)
		}
		ends, names := planStages(c.total, c.canary, specs)
		if !reflect.DeepEqual(ends, c.ends) || strings.Join(names, " ") != c.names {
			t.Errorf("%d devices, canary %d, stages %q: %v %v", c.total, c.canary, c.stages, ends, names)
		}
	}
	for _, bad := range []string{"0", "101%", "x", "-1"} {
		if _, err := parseStages(bad); err == nil {
			t.Errorf("stages %q accepted", bad)
		}
	}
}

// FuzzStageBody: retained bodies come from the broker; no input panics,
// and a result always parses as TOML.
func FuzzStageBody(f *testing.F) {
	f.Add([]byte("[tracking]\nmax_interval = \"30s\"\n"), []byte("[privacy]\nmode = \"coarse\"\n"))
	f.Add([]byte(""), []byte("[a.b.c]\nd = [1, 2]\n"))
	f.Add([]byte("a = 1"), []byte("[a]\nb = 2\n"))
	f.Fuzz(func(t *testing.T, own, scope []byte) {
		b, err := stageBody(own, scope, func(string) bool { return false })
		if err != nil {
			return
		}
		var m map[string]any
		if err := toml.Unmarshal(b, &m); err != nil {
			t.Fatalf("result does not parse: %v\n%s", err, b)
		}
	})
}
