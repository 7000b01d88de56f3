package update

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadState: update.json is read at every start; whatever a damaged
// flash leaves in it must give an error or a consistent state, never a
// panic, and Open must carry on.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"format":"kestrel-update/1","running":{"seq":2,"version":"v2","slot":"a"}}`))
	f.Add([]byte(`{"format":"kestrel-update/1","running":{"slot":""},"staging":{"seq":3,"slot":"b","size":5000,"chunk_size":1024,"have":"Hw==","manifest":{}}}`))
	f.Add([]byte(`{"format":"kestrel-update/1","running":{"slot":"a"},"pending":{"seq":3,"slot":"b","from":{"slot":"a"},"boots":1}}`))
	f.Add([]byte(`{"format":"kestrel-update/1","running":{"slot":"c"}}`))
	f.Add([]byte(`{"format":"kestrel-update/1","staging":{"slot":"a","size":1,"chunk_size":0}}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := Open(Options{Dir: dir, Executable: "/nonexistent/kestrel"})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		u.Next()
		u.Progress()
		u.Report()
		if _, err := u.Boot(false); err != nil {
			t.Logf("boot: %v", err)
		}
	})
}
