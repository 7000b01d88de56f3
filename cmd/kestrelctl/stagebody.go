package main

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// stageBody is the device-scope body that gives one device of a stage the
// effective config the scope push would give it: the device's own
// device-scope body, plus each key of the scope body that neither the
// device scope nor a scope above the pushed one (shadow) sets on that
// device. The device's own keys win, as they would over the scope.
func stageBody(deviceBody, scopeBody []byte, shadow func(path string) bool) ([]byte, error) {
	if len(deviceBody) > config.MaxFileSize || len(scopeBody) > config.MaxFileSize {
		return nil, fmt.Errorf("a config body over %d bytes", config.MaxFileSize)
	}
	own := map[string]any{}
	if err := toml.Unmarshal(deviceBody, &own); err != nil {
		return nil, fmt.Errorf("device body: %w", err)
	}
	add := map[string]any{}
	if err := toml.Unmarshal(scopeBody, &add); err != nil {
		return nil, fmt.Errorf("scope body: %w", err)
	}
	ownKeys := map[string]bool{}
	flattenTOML("", own, func(p string, _ any) { ownKeys[p] = true })
	flattenTOML("", add, func(p string, v any) {
		if ownKeys[p] || shadow(p) {
			return
		}
		// A key where the device body has a value, not a table: the
		// device's own value wins (no valid config has both).
		parts := strings.Split(p, ".")
		for i := 1; i < len(parts); i++ {
			if ownKeys[strings.Join(parts[:i], ".")] {
				return
			}
		}
		if _, isTable := lookupTOML(own, p); isTable {
			return
		}
		setTOMLPath(own, strings.Split(p, "."), v)
	})
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(own); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// flattenTOML calls fn for every leaf of a decoded TOML table with its
// dotted path (the config's key paths).
func flattenTOML(prefix string, m map[string]any, fn func(string, any)) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			flattenTOML(p, sub, fn)
			continue
		}
		fn(p, v)
	}
}

func setTOMLPath(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		sub, ok := m[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[k] = sub
		}
		m = sub
	}
	m[path[len(path)-1]] = v
}

// lookupTOML reports whether path names a table in m.
func lookupTOML(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[k]; !ok {
			return nil, false
		}
	}
	_, isTable := cur.(map[string]any)
	return cur, isTable
}
