package evidence

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadBundle: no input panics the parser or the verifier, and every
// bundle that parses verifies to a report. Seeds: testdata/bundles (a
// clean bundle and tampered ones) and the f.Add cases.
func FuzzReadBundle(f *testing.F) {
	files, _ := filepath.Glob("testdata/bundles/*.jsonl")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte(`{"kestrel":"kestrel-evidence/1","device":"d","device_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}` + "\n" + `{"record":"zz"}`))
	f.Add([]byte(`{"kestrel":"kestrel-evidence/1","device":"d","device_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}` + "\n" + `{"record":"98010a"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadBundle(bytes.NewReader(data))
		if err != nil {
			return
		}
		rep := Verify(b, nil)
		_ = rep.Summary()
		if rep.Proven > rep.Records {
			t.Fatalf("proved %d of %d records", rep.Proven, rep.Records)
		}
	})
}

// TestSeedBundlesParse checks the clean seed verifies; KESTREL_WRITE_SEEDS=1
// regenerates the seed corpus (testdata/bundles).
func TestSeedBundlesParse(t *testing.T) {
	if os.Getenv("KESTREL_WRITE_SEEDS") != "" {
		pub, s := newKey(t, 1)
		recs := shift(t, s, 2, 40, 15)
		if err := os.MkdirAll("testdata/bundles", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/bundles/clean.jsonl", bundleOf(t, pub, recs), 0o644); err != nil {
			t.Fatal(err)
		}
		// A range export from the platform: enrolment history, first_seq
		// and a note in the header.
		b, err := ReadBundle(bytes.NewReader(bundleOf(t, pub, recs[16:])))
		if err != nil {
			t.Fatal(err)
		}
		h := b.Header
		h.Enrolment = []Enrolment{enrolmentOf(pub, 0)}
		h.FirstSeq = recs[16].Seq
		h.Notes = []Problem{{Seq: recs[20].Seq, Kind: "altered", Detail: "positions row: lat is not a value the device sent"}}
		var w bytes.Buffer
		if err := WriteHeader(&w, h); err != nil {
			t.Fatal(err)
		}
		var buf []byte
		for i := range b.Records {
			if buf, err = WriteRecord(&w, &b.Records[i], buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile("testdata/bundles/export.jsonl", w.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		recs = append(recs[:10:10], recs[11:]...)
		if err := os.WriteFile("testdata/bundles/deleted.jsonl", bundleOf(t, pub, recs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("testdata/bundles/clean.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if rep := verifyBytes(t, b); !rep.OK() {
		t.Fatalf("seed clean.jsonl: %s", rep.Summary())
	}
	// The export seed: anchored, enrolled, and failing on its note only.
	b, err = os.ReadFile("testdata/bundles/export.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	rep := verifyBytes(t, b)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "altered" || rep.FirstSeq == 0 || rep.Proven != rep.Records {
		t.Fatalf("seed export.jsonl: %s", rep.Summary())
	}
}
