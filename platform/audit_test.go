package platform

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

type auditSigner struct{ priv ed25519.PrivateKey }

func (s auditSigner) ID() string             { return fleet.KeyID(s.priv.Public().(ed25519.PublicKey)) }
func (s auditSigner) Sign(msg []byte) []byte { return ed25519.Sign(s.priv, msg) }
func (s auditSigner) pub() string {
	return base64.StdEncoding.EncodeToString(s.priv.Public().(ed25519.PublicKey))
}

func newAuditSigner(seed byte) auditSigner {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return auditSigner{ed25519.NewKeyFromSeed(s)}
}

// deviceChain makes a device's chained, sealed audit entries as the agent
// does (agent/fleetctl), from seq 1.
type deviceChain struct {
	t      *testing.T
	signer auditSigner
	dev    string
	seq    uint64
	head   string
}

func (c *deviceChain) next(kind, result string) (Message, []byte) {
	c.t.Helper()
	c.seq++
	e := &fleet.AuditEntry{Seq: c.seq, Time: 1764763200000 + int64(c.seq)*1000, Kind: kind, Result: result, By: []string{fleet.ByDevice},
		Diff: []fleet.AuditDiff{{Path: "tracking.distance", Old: "50", New: fmt.Sprint(c.seq)}}}
	body, err := e.Chain("f1", c.dev, c.head)
	if err != nil {
		c.t.Fatal(err)
	}
	c.head = e.Digest
	return c.seal(c.signer, body), body
}

func (c *deviceChain) seal(s auditSigner, body []byte) Message {
	c.t.Helper()
	p, err := fleet.Seal(s, "f1", c.dev, fleet.ChannelAudit, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return Message{Topic: wire.Topic("f1", c.dev, ChannelAudit), Payload: p, Received: time.Now()}
}

func auditProblems(t *testing.T, s *Store, dev string) map[uint64]string {
	t.Helper()
	rows, err := s.AuditEntries(context.Background(), AuditQuery{Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]string{}
	for _, r := range rows {
		if r.Problems != "" {
			out[r.Seq] += r.Problems + "|"
		}
	}
	return out
}

func verifyProblems(t *testing.T, s *Store, dev string) []fleet.AuditProblem {
	t.Helper()
	reps, err := s.VerifyAudit(context.Background(), AuditQuery{Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 {
		t.Fatalf("%d chain reports, want 1", len(reps))
	}
	return reps[0].Problems
}

func hasProblem(ps []fleet.AuditProblem, first, last uint64, problem string) bool {
	for _, p := range ps {
		if p.FirstSeq == first && p.LastSeq == last && p.Problem == problem {
			return true
		}
	}
	return false
}

// The chain is checked on insert: a clean chain is stored clean, a
// redelivery is idempotent, and a gap, a reused seq, a forged signature
// and a broken prev link are stored and flagged, never dropped.
func TestAuditInsertChecks(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		c := &deviceChain{t: t, signer: newAuditSigner(7), dev: "d1"}
		write(t, s, statusMsg(t, "d1", true, 1000, map[string]any{"device_key": c.signer.pub()}))
		m1, _ := c.next("config", "applied")
		m2, _ := c.next("command", "ok")
		m3, _ := c.next("privacy", "pause")
		write(t, s, m1, m2)
		write(t, s, m3, m2) // m2 redelivered
		// The device goes offline: its Last Will's state has no key; the
		// key announced before still checks what arrives after it.
		write(t, s, statusMsg(t, "d1", false, 2000, nil))
		m3b, _ := c.next("rollback", "rolled_back")
		write(t, s, m3b)
		if p := auditProblems(t, s, "d1"); len(p) != 0 {
			t.Fatalf("clean chain flagged: %v", p)
		}
		if p := verifyProblems(t, s, "d1"); p != nil {
			t.Fatalf("clean chain: %v", p)
		}
		rows, _ := s.AuditEntries(context.Background(), AuditQuery{Device: "d1"})
		if len(rows) != 4 || rows[3].Verdict != fleet.VerdictVerified || rows[0].Kind != "config" {
			t.Fatalf("rows %+v", rows)
		}

		c.next("config", "applied") // seq 5 never arrives
		m6, _ := c.next("command", "ok")
		write(t, s, m6)
		// seq 3 again with other content (a device that lost its state)
		reuse := &deviceChain{t: t, signer: c.signer, dev: "d1", seq: 2, head: rows[1].Digest}
		r3, _ := reuse.next("reload", "applied")
		// seq 7, sealed by a key the device does not announce
		_, b7 := c.next("privacy", "off")
		forged := c.seal(newAuditSigner(8), b7)
		// seq 8 linked to the wrong entry
		c.head = rows[0].Digest
		m8, _ := c.next("privacy", "pause")
		write(t, s, r3, forged, m8)

		p := auditProblems(t, s, "d1")
		for seq, want := range map[uint64]string{6: "gap: seq 5-5 missing", 3: fleet.ProblemReused, 7: fleet.ProblemSignature + ": " + fleet.VerdictKeyChanged, 8: fleet.ProblemLink} {
			if !strings.Contains(p[seq], want) {
				t.Errorf("seq %d flagged %q, want %q", seq, p[seq], want)
			}
		}
		if len(p) != 4 {
			t.Errorf("flags %v, want 4 entries flagged", p)
		}
		v := verifyProblems(t, s, "d1")
		for _, w := range []struct {
			first, last uint64
			problem     string
		}{{3, 3, fleet.ProblemReused}, {5, 5, fleet.ProblemMissing}, {7, 7, fleet.ProblemSignature}, {8, 8, fleet.ProblemLink}} {
			if !hasProblem(v, w.first, w.last, w.problem) {
				t.Errorf("verify did not name seq %d-%d %s: %v", w.first, w.last, w.problem, v)
			}
		}
	})
}

// setPayload rewrites a stored entry's payload, as someone with write
// access to the database could.
func setPayload(t *testing.T, s *Store, dev string, seq uint64, f func(string) string) {
	t.Helper()
	ctx := context.Background()
	var p string
	if err := s.DB().QueryRowContext(ctx, s.d.q("SELECT payload FROM audit_entries WHERE device = ? AND seq = ?"), dev, int64(seq)).Scan(&p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, s.d.q("UPDATE audit_entries SET payload = ? WHERE device = ? AND seq = ?"), f(p), dev, int64(seq)); err != nil {
		t.Fatal(err)
	}
}

// VerifyAudit names each kind of tampering with the stored chain: a value
// altered, an entry deleted (in the middle and at the head), two entries
// reordered, a signature forged.
func TestAuditVerifyNamesTampering(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		ctx := context.Background()
		c := &deviceChain{t: t, signer: newAuditSigner(7), dev: "d1"}
		msgs := []Message{statusMsg(t, "d1", true, 1000, map[string]any{"device_key": c.signer.pub()})}
		for range 9 {
			m, _ := c.next("config", "applied")
			msgs = append(msgs, m)
		}
		write(t, s, msgs...)
		if p := verifyProblems(t, s, "d1"); p != nil {
			t.Fatalf("clean chain: %v", p)
		}
		// Tamper: seq 2's outcome changed in place.
		setPayload(t, s, "d1", 2, func(p string) string { return strings.Replace(p, `"result":"applied"`, `"result":"rejected"`, 1) })
		// Delete: seq 4 gone.
		if _, err := s.DB().ExecContext(ctx, s.d.q("DELETE FROM audit_entries WHERE device = ? AND seq = ?"), "d1", 4); err != nil {
			t.Fatal(err)
		}
		// Reorder: seq 6 and 7 swap places.
		var p6, p7 string
		s.DB().QueryRowContext(ctx, s.d.q("SELECT payload FROM audit_entries WHERE seq = ?"), 6).Scan(&p6)
		s.DB().QueryRowContext(ctx, s.d.q("SELECT payload FROM audit_entries WHERE seq = ?"), 7).Scan(&p7)
		setPayload(t, s, "d1", 6, func(string) string { return p7 })
		setPayload(t, s, "d1", 7, func(string) string { return p6 })
		// Forge: seq 8 signed by another key under the device's key id.
		setPayload(t, s, "d1", 8, func(p string) string {
			i := strings.LastIndex(p, `"sig":"`)
			other := base64.StdEncoding.EncodeToString(ed25519.Sign(newAuditSigner(8).priv, []byte("forged")))
			return p[:i] + `"sig":"` + other + `"}`
		})
		// Delete the head, seq 9.
		if _, err := s.DB().ExecContext(ctx, s.d.q("DELETE FROM audit_entries WHERE device = ? AND seq = ?"), "d1", 9); err != nil {
			t.Fatal(err)
		}
		v := verifyProblems(t, s, "d1")
		for _, w := range []struct {
			first, last uint64
			problem     string
		}{{2, 2, fleet.ProblemAltered}, {2, 2, fleet.ProblemSignature}, {4, 4, fleet.ProblemMissing}, {6, 6, fleet.ProblemOrder}, {7, 7, fleet.ProblemOrder},
			{8, 8, fleet.ProblemSignature}, {9, 9, fleet.ProblemMissing}} {
			if !hasProblem(v, w.first, w.last, w.problem) {
				t.Errorf("verify did not name seq %d-%d %s", w.first, w.last, w.problem)
			}
		}
		for _, p := range v {
			if p.Problem == fleet.ProblemMissing && p.FirstSeq == 4 && !strings.Contains(p.Detail, "deleted since") {
				t.Errorf("seq 4 not said to be deleted: %s", p)
			}
			if p.Problem == fleet.ProblemSignature && p.FirstSeq == 8 && !strings.Contains(p.Detail, fleet.VerdictBad) {
				t.Errorf("seq 8: %s", p)
			}
		}
		for _, p := range v {
			t.Log(p)
		}
		// The head row deleted too: the chain is still verified, and the
		// missing head named.
		if _, err := s.DB().ExecContext(ctx, "DELETE FROM audit_heads"); err != nil {
			t.Fatal(err)
		}
		v = verifyProblems(t, s, "d1")
		if !hasProblem(v, 8, 8, fleet.ProblemHead) || !hasProblem(v, 4, 4, fleet.ProblemMissing) {
			t.Errorf("without the head row: %v", v)
		}
	})
}

// The consultation chain: rows as written verify; an altered or deleted
// row is named.
func TestConsultationChain(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		ctx := context.Background()
		for i := range 4 {
			c, err := s.LogConsultation(ctx, Consultation{Operator: "pc1234", Command: "track", Fleet: "f1", Device: fmt.Sprint("d", i), From: 1, To: 2, Outcome: "ok"})
			if err != nil {
				t.Fatal(err)
			}
			if c.Seq != uint64(i+1) {
				t.Fatalf("seq %d, want %d", c.Seq, i+1)
			}
		}
		if p, err := s.VerifyConsultations(ctx); err != nil || p != nil {
			t.Fatalf("clean chain: %v %v", p, err)
		}
		if _, err := s.DB().ExecContext(ctx, "UPDATE consultations SET operator = 'someone else' WHERE seq = 2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB().ExecContext(ctx, "DELETE FROM consultations WHERE seq = 3"); err != nil {
			t.Fatal(err)
		}
		p, err := s.VerifyConsultations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !hasProblem(p, 2, 2, fleet.ProblemAltered) || !hasProblem(p, 3, 3, fleet.ProblemMissing) || len(p) != 2 {
			t.Fatalf("problems %v, want seq 2 altered and seq 3 missing", p)
		}
	})
}

// An enrolled device's entries are checked against the enrolled key: a
// device (or an impostor) that announces another key and signs with it is
// flagged, not trusted on its own word.
func TestAuditEnrolledKeyWins(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(t *testing.T) *Store) {
		s := open(t)
		enrolled, other := newAuditSigner(7), newAuditSigner(9)
		if _, err := s.Enrol(context.Background(), EnrolRequest{Fleet: "f1", Device: "d2", Key: enrolled.priv.Public().(ed25519.PublicKey), By: "fitter 12", Source: "key"}); err != nil {
			t.Fatal(err)
		}
		c := &deviceChain{t: t, signer: other, dev: "d2"}
		write(t, s, statusMsg(t, "d2", true, 1000, map[string]any{"device_key": other.pub()}))
		m1, _ := c.next("config", "applied")
		write(t, s, m1)
		if p := auditProblems(t, s, "d2"); !strings.Contains(p[1], fleet.ProblemSignature) {
			t.Fatalf("an entry signed by an unenrolled key: flags %v", p)
		}
	})
}
