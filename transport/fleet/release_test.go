package fleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"
)

func testRelease() Release {
	return Release{
		Fleet: "f1", Scope: "all", Version: "1.2.0", Seq: 5,
		GOOS: "linux", GOARCH: "arm", GOARM: "7",
		SHA256: strings.Repeat("ab", 32), Size: 1000, ChunkSize: DefaultChunkSize,
		SpoolFormats: []int{1}, Issued: time.Now().UnixMilli(), Expires: time.Now().Add(time.Hour).UnixMilli(),
	}
}

func releaseKeys(t *testing.T, roles string) (ed25519.PrivateKey, Keyring) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	kr, err := NewKeyring([]string{roles + ":" + EncodePublicKey(pub)})
	if err != nil {
		t.Fatal(err)
	}
	return priv, kr
}

func TestReleaseSignVerify(t *testing.T) {
	priv, kr := releaseKeys(t, RoleRelease)
	b, err := SignRelease([]ed25519.PrivateKey{priv}, testRelease())
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyRelease(r, 1); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := r.CheckInstall(Platform{"linux", "arm", "7"}, 4, 1, time.Now()); err != nil {
		t.Fatalf("check install: %v", err)
	}
	// Tampering with any signed field breaks the signature.
	r.Size++
	if _, err := kr.VerifyRelease(r, 1); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered size: %v", err)
	}
	if got := (Target{"f1", "group/north"}).UpdateTopic(); got != "kestrel/v1/f1/_group/north/update/desired" {
		t.Fatalf("update topic %q", got)
	}
}

func TestReleaseWrongRoleRefused(t *testing.T) {
	priv, kr := releaseKeys(t, RoleConfig)
	b, _ := SignRelease([]ed25519.PrivateKey{priv}, testRelease())
	r, err := DecodeRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyRelease(r, 1); err == nil {
		t.Fatal("a config key signed a release and it verified")
	}
}

func TestReleaseCheckInstall(t *testing.T) {
	r := testRelease()
	now := time.Now()
	for _, c := range []struct {
		p       Platform
		running uint64
		spool   int
		at      time.Time
		want    error
	}{
		{Platform{"linux", "arm", "7"}, 5, 1, now, ErrDowngrade},
		{Platform{"linux", "arm", "6"}, 1, 1, now, ErrWrongPlatform},
		{Platform{"linux", "arm", "7"}, 1, 1, now.Add(2 * time.Hour), ErrReleaseExpired},
		{Platform{"linux", "arm", "7"}, 1, 2, now, ErrMalformed},
	} {
		if err := r.CheckInstall(c.p, c.running, c.spool, c.at); !errors.Is(err, c.want) {
			t.Errorf("%+v: got %v, want %v", c, err, c.want)
		}
	}
	r.AllowDowngrade = true
	if err := r.CheckInstall(Platform{"linux", "arm", "7"}, 9, 1, now); err != nil {
		t.Errorf("signed downgrade refused: %v", err)
	}
}

func FuzzDecodeRelease(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b, _ := SignRelease([]ed25519.PrivateKey{priv}, testRelease())
	f.Add(b)
	f.Add([]byte(`{"kestrel":"kestrel-release/1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRelease(b)
		if err == nil && r.Size <= 0 {
			t.Fatal("accepted a release without a size")
		}
	})
}
