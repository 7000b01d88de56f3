package main

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Every read of the platform database is a consultation: logged before
// anything is shown (request) and after (outcome), with the operator and
// the key id of the signing key given, in a chain that verifies.
func TestDatabaseReadsAreConsultations(t *testing.T) {
	db := platformTestDB(t)
	prefix := filepath.Join(t.TempDir(), "op")
	if code, _, stderr := wireTestRun(t, "", "keygen", "--out", prefix); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	t.Setenv("KESTREL_SIGNING_KEY", "")
	t.Setenv("KESTREL_OPERATOR", "pc-0815")
	for _, args := range [][]string{
		{"track", "--db", db, "--device", "bwc-9", "--from", "2019-06-19T10:04:23Z", "--operator", "pc-4711", "--sign-key", prefix + ".key"},
		{"gaps", "--db", db},
		{"devices", "--db", db, "--json"},
	} {
		if code, _, stderr := wireTestRun(t, "", args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	st, err := platform.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs, err := st.Consultations(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(prefix + ".key")
	k, err := fleet.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	kid := fleet.KeyID(k.Public().(ed25519.PublicKey))
	want := []struct{ op, kid, cmd, outcome string }{
		{"pc-4711", kid, "track", "requested"}, {"pc-4711", kid, "track", "ok: 2 positions"},
		{"pc-0815", "", "gaps", "requested"}, {"pc-0815", "", "gaps", "ok: 1 gaps"},
		{"pc-0815", "", "devices", "requested"}, {"pc-0815", "", "devices", "ok: 1 devices"},
	}
	if len(cs) != len(want) {
		t.Fatalf("%d consultations, want %d: %+v", len(cs), len(want), cs)
	}
	for i, w := range want {
		c := cs[i]
		if c.Operator != w.op || c.KeyID != w.kid || c.Command != w.cmd || c.Outcome != w.outcome || c.Seq != uint64(i+1) {
			t.Errorf("consultation %d: %+v, want %+v", i, c, w)
		}
	}
	if cs[0].Device != "bwc-9" || cs[0].From != 1560938663000 || cs[0].To != 0 || !strings.Contains(cs[0].Detail, "format jsonl") {
		t.Errorf("track consultation: %+v", cs[0])
	}
	code, out, _ := wireTestRun(t, "", "audit", "--db", db, "--verify")
	if code != 0 || !strings.Contains(out, "consultations: 7 rows: verified") {
		t.Fatalf("audit --verify: exit %d\n%s", code, out)
	}
}

// A read whose consultation cannot be logged shows nothing.
func TestReadRefusedWithoutConsultationLog(t *testing.T) {
	db := platformTestDB(t)
	st, err := platform.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().Exec("DROP TABLE consultations"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	code, out, stderr := wireTestRun(t, "", "track", "--db", db, "--device", "bwc-9", "--operator", "pc-4711")
	if code == 0 || out != "" || !strings.Contains(stderr, "consultation log") {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, stderr)
	}
}
