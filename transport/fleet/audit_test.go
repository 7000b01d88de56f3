package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

// The digest's canonical encoding, pinned: a verifier in another language
// checks itself against this vector (docs/audit.md).
func TestAuditDigestVector(t *testing.T) {
	body := []byte(`{"seq":1,"time":1764763200000,"kind":"config","result":"applied","by":["k1"],"diff":[{"path":"tracking.distance","old":"50","new":"7"}],"prev":"","future":{"b":1, "a":"<x>"}}`)
	canon := `{"by":["k1"],"diff":[{"path":"tracking.distance","old":"50","new":"7"}],"future":{"b":1,"a":"<x>"},"kind":"config","prev":"","result":"applied","seq":1,"time":1764763200000}`
	sum := sha256.Sum256([]byte("kestrel-audit/1\nmet\nbwc-1\n" + canon))
	want := hex.EncodeToString(sum[:])
	got, err := AuditDigest("met", "bwc-1", body)
	if err != nil || got != want {
		t.Fatalf("digest %s %v, want %s", got, err, want)
	}
	// Member order, whitespace and the digest member itself do not count;
	// every other member does, a field unknown to this build included.
	same := []byte(` { "future":{"b":1,"a":"<x>"}, "prev":"", "digest":"ab", "result":"applied","kind":"config","time":1764763200000,"seq":1,"by":["k1"],"diff":[{"path":"tracking.distance","old":"50","new":"7"}] }`)
	if d, _ := AuditDigest("met", "bwc-1", same); d != want {
		t.Fatalf("reordered body: digest %s", d)
	}
	for _, other := range [][]byte{
		[]byte(`{"seq":1,"time":1764763200000,"kind":"config","result":"applied","by":["k1"],"diff":[{"path":"tracking.distance","old":"50","new":"7"}],"prev":"","future":{"b":2,"a":"<x>"}}`),
		[]byte(`{"seq":1,"time":1764763200000,"kind":"config","result":"applied","by":["k1"],"diff":[{"path":"tracking.distance","old":"50","new":"7"}],"prev":"x","future":{"b":1,"a":"<x>"}}`),
	} {
		if d, _ := AuditDigest("met", "bwc-1", other); d == want {
			t.Fatalf("changed body %s has the same digest", other)
		}
	}
	if d, _ := AuditDigest("met", "bwc-2", body); d == want {
		t.Fatal("the digest does not bind the device")
	}
	for _, bad := range []string{`null`, `[]`, `{`, `"x"`} {
		if _, err := AuditDigest("met", "bwc-1", []byte(bad)); err == nil {
			t.Errorf("AuditDigest(%s) accepted", bad)
		}
	}
}

func TestSecretName(t *testing.T) {
	for name, secret := range map[string]bool{
		"broker.password": true, "broker.password_file": false, "pin": true, "wifi.psk": true, "api_token": true,
		"device.key": true, "broker.key_file": false, "remote.trusted_keys": false, "signing_key": true, "device.public_key": false,
		"tracking.distance": false, "mode": false, "broker.username": false, "client_secret": true,
	} {
		if SecretName(name) != secret {
			t.Errorf("SecretName(%q) = %v", name, !secret)
		}
	}
	if Redact("pin", "1234") != Redacted || Redact("pin", "") != "" || Redact("mode", "on") != "on" {
		t.Error("Redact")
	}
}

func chainOf(t *testing.T, n int) []*AuditEntry {
	t.Helper()
	var out []*AuditEntry
	prev := ""
	for i := 1; i <= n; i++ {
		e := &AuditEntry{Seq: uint64(i), Time: int64(i), Kind: "config", Result: StatusApplied}
		if _, err := e.Chain("met", "d1", prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Digest
		out = append(out, e)
	}
	return out
}

func TestCheckAuditChain(t *testing.T) {
	check := ChainCheck{Fleet: "met", Device: "d1", SkipSignatures: true, FromStart: true}
	if p := CheckAuditChain(check, chainOf(t, 5)); p != nil {
		t.Fatalf("clean chain: %v", p)
	}
	one := func(entries []*AuditEntry, first, last uint64, problem string, cc ...ChainCheck) {
		t.Helper()
		cc = append(cc, check)
		p := CheckAuditChain(cc[0], entries)
		for _, x := range p {
			if x.FirstSeq == first && x.LastSeq == last && x.Problem == problem {
				return
			}
		}
		t.Errorf("want seq %d-%d %s, got %v", first, last, problem, p)
	}
	c := chainOf(t, 5)
	c[2].Result = StatusRejected // altered in memory: its JSON no longer matches
	one(c, 3, 3, ProblemAltered)
	c = chainOf(t, 5)
	one(append(c[:1:1], c[3:]...), 2, 3, ProblemMissing)
	c = chainOf(t, 5)
	one(c[2:], 1, 2, ProblemMissing)
	c = chainOf(t, 5)
	c[1], c[2] = c[2], c[1]
	one(c, 2, 2, ProblemOrder)
	c = chainOf(t, 3)
	other := chainOf(t, 3)[1]
	other.Result = StatusRejected
	other.Chain("met", "d1", c[0].Digest)
	one([]*AuditEntry{c[0], c[1], other, c[2]}, 2, 2, ProblemReused)
	c = chainOf(t, 3)
	c[2].Chain("met", "d1", "") // the prev link removed
	one(c, 3, 3, ProblemLink)
	// a redelivered entry is no fault
	c = chainOf(t, 3)
	if p := CheckAuditChain(check, []*AuditEntry{c[0], c[1], c[1], c[2]}); p != nil {
		t.Errorf("duplicate: %v", p)
	}
	// signatures: unsigned entries from a device that announces a key
	k, _ := testKey(7)
	dev := testDevice{k}
	sc := check
	sc.SkipSignatures, sc.DeviceKey = false, dev.announced()
	one(chainOf(t, 2), 1, 1, ProblemSignature, sc)
}

// FuzzDecodeAudit: any payload on the audit channel decodes or is refused,
// and the chain check never panics on what decodes.
func FuzzDecodeAudit(f *testing.F) {
	k, _ := testKey(7)
	dev := testDevice{k}
	e := &AuditEntry{Seq: 1, Time: 1, Kind: "command", Name: "privacy", Result: ReplyOK, Args: map[string]string{"mode": "on"}, By: []string{"k"}}
	body, _ := e.Chain("met", "bwc-1", "")
	good, _ := Seal(dev, "met", "bwc-1", ChannelAudit, body)
	f.Add(good)
	f.Add(body)
	f.Add([]byte(`{"seq":3,"kind":"config","result":"applied"}`))
	f.Add([]byte(`{"kestrel":"kestrel-device/1","kid":"x","body":{"kind":"x"},"sig":"AAAA"}`))
	f.Add([]byte(`{"kind":"x","digest":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAudit(data)
		if err != nil {
			return
		}
		_ = a.CheckDigest("met", "bwc-1")
		_ = CheckAuditChain(ChainCheck{Fleet: "met", Device: "bwc-1", DeviceKey: dev.announced(), FromStart: true}, []*AuditEntry{a, a})
	})
}

// BenchmarkAuditEntry is the device's cost of one audit entry of a config
// push that changed two keys: chained (two JSON encodings and SHA-256) and
// sealed (Ed25519), beside its peer, the same entry as it went before the
// chain (one JSON encoding, unsigned), with the link bytes of each.
func BenchmarkAuditEntry(b *testing.B) {
	k, _ := testKey(7)
	dev := testDevice{k}
	mk := func() *AuditEntry {
		return &AuditEntry{Seq: 1234, Time: 1764763200000, Kind: "config", Scope: "device/bwc-0001", KeyID: "34750f98bd59fcfc", Version: 42,
			Result: StatusApplied, Verified: true, Signers: []string{"34750f98bd59fcfc"}, By: []string{"34750f98bd59fcfc"},
			Diff: []AuditDiff{{Path: "tracking.distance", Old: "50", New: "25"}, {Path: "privacy.grid", Old: "0", New: "500"}}}
	}
	prev := "9f2c0a3b5d7e9f2c0a3b5d7e9f2c0a3b5d7e9f2c0a3b5d7e9f2c0a3b5d7e9f2c"
	b.Run("chained-sealed", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			e := mk()
			body, err := e.Chain("met", "bwc-0001", prev)
			if err != nil {
				b.Fatal(err)
			}
			p, err := Seal(dev, "met", "bwc-0001", ChannelAudit, body)
			if err != nil {
				b.Fatal(err)
			}
			n = len(p)
		}
		b.ReportMetric(float64(n), "B/entry")
	})
	b.Run("unchained-unsigned", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			e := mk()
			e.By, e.Diff = nil, nil
			p, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			n = len(p)
		}
		b.ReportMetric(float64(n), "B/entry")
	})
}
