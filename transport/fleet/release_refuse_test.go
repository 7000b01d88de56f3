package fleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// TestReleaseRefusals: the verification failure paths the operator side
// relies on devices to take: a manifest signed by an untrusted key, one
// short of the threshold, one whose signed fields were changed after
// signing (a forged target or seq), and signing one that is already
// expired.
func TestReleaseRefusals(t *testing.T) {
	priv, kr := releaseKeys(t, RoleRelease)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := SignRelease([]ed25519.PrivateKey{stranger}, testRelease())
	r, err := DecodeRelease(forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyRelease(r, 1); err == nil {
		t.Error("a manifest signed by an untrusted key verified")
	}
	good, _ := SignRelease([]ed25519.PrivateKey{priv}, testRelease())
	if r, _ := DecodeRelease(good); r == nil {
		t.Fatal("good manifest does not decode")
	} else if _, err := kr.VerifyRelease(r, 2); err == nil {
		t.Error("one signature met a threshold of two")
	}
	for name, edit := range map[string]func(*Release){
		"retargeted": func(r *Release) { r.Scope = "group/south" },
		"renumbered": func(r *Release) { r.Seq = 99 },
		"downgrade":  func(r *Release) { r.AllowDowngrade = true },
		"extended":   func(r *Release) { r.Expires += int64(time.Hour / time.Millisecond) },
	} {
		var m Release
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		edit(&m)
		b, _ := json.Marshal(&m)
		r, err := DecodeRelease(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := kr.VerifyRelease(r, 1); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
	exp := testRelease()
	exp.Expires = exp.Issued
	if _, err := SignRelease([]ed25519.PrivateKey{priv}, exp); err == nil {
		t.Error("signed a manifest that expires when it is issued")
	}
}

func TestReleaseReaches(t *testing.T) {
	r := testRelease() // fleet f1, scope all
	for _, c := range []struct {
		scope, fleet, dev string
		groups            []string
		want              bool
	}{
		{"all", "f1", "d1", nil, true},
		{"all", "f2", "d1", nil, false},
		{"group/north", "f1", "d1", []string{"south", "north"}, true},
		{"group/north", "f1", "d1", []string{"south"}, false},
		{"device/d1", "f1", "d1", nil, true},
		{"device/d1", "f1", "d2", nil, false},
	} {
		r.Scope = c.scope
		if got := r.Reaches(c.fleet, c.dev, c.groups); got != c.want {
			t.Errorf("%+v: %v", c, got)
		}
	}
	if got := ReleaseChunkFilter("f1", "ab"); got != "kestrel/v1/f1/_release/ab/+" {
		t.Errorf("filter %q", got)
	}
}
