package spool

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	kestrel "github.com/kestrel-edge/kestrel"
)

// boltStore is the Store on go.etcd.io/bbolt that the log was measured
// against (docs/spool.md). It lives in a test file: it runs the contract
// suite and the benchmarks, but does not ship in the agent.
//
// Key: seq, big-endian. Value: priority, time (8 bytes LE), payload. One
// bbolt transaction per group commit.
type boltStore struct {
	db *bolt.DB

	mu    sync.Mutex
	pend  []Item
	drops []uint64
}

var (
	boltRecords = []byte("records")
	boltMeta    = []byte("meta")
)

func openBolt(t testing.TB, dir string) *boltStore {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "spool.db"), 0o600, &bolt.Options{
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType, // bbolt's lightest write path
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(boltRecords); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(boltMeta)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return &boltStore{db: db}
}

var _ Store = (*boltStore)(nil)

func boltKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func (b *boltStore) Recover(fn func(RecMeta)) (RecoverStats, error) {
	var st RecoverStats
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(boltRecords).ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < 9 {
				st.Dropped++
				return nil
			}
			seq := binary.BigEndian.Uint64(k)
			fn(RecMeta{Seq: seq, Priority: kestrel.Priority(v[0]), Time: int64(binary.LittleEndian.Uint64(v[1:])),
				Size: len(v) - 9, At: Loc(seq)})
			st.Records++
			return nil
		})
	})
	return st, err
}

func (b *boltStore) Append(it *Item) (Loc, error) {
	c := *it
	c.Data = append([]byte(nil), it.Data...)
	b.mu.Lock()
	b.pend = append(b.pend, c)
	b.mu.Unlock()
	return Loc(it.Seq), nil
}

func (b *boltStore) Drop(seq uint64, _ Loc) error {
	b.mu.Lock()
	b.drops = append(b.drops, seq)
	b.mu.Unlock()
	return nil
}

func (b *boltStore) Sync() error {
	b.mu.Lock()
	pend, drops := b.pend, b.drops
	b.mu.Unlock()
	if len(pend) == 0 && len(drops) == 0 {
		return nil
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(boltRecords)
		bk.FillPercent = 0.9 // appends by growing seq: pack pages
		for _, it := range pend {
			v := make([]byte, 9+len(it.Data))
			v[0] = byte(it.Priority)
			binary.LittleEndian.PutUint64(v[1:], uint64(it.Time))
			copy(v[9:], it.Data)
			if err := bk.Put(boltKey(it.Seq), v); err != nil {
				return err
			}
		}
		for _, q := range drops {
			if err := bk.Delete(boltKey(q)); err != nil {
				return err
			}
		}
		return nil
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.pend = b.pend[len(pend):]
		b.pend = b.pend[:0:0]
		return fmt.Errorf("bbolt: %w", err)
	}
	b.pend = b.pend[len(pend):]
	b.drops = b.drops[len(drops):]
	return nil
}

func (b *boltStore) Read(at Loc, size int, dst []byte) ([]byte, error) {
	b.mu.Lock()
	for _, it := range b.pend {
		if it.Seq == uint64(at) {
			b.mu.Unlock()
			return append(dst, it.Data...), nil
		}
	}
	b.mu.Unlock()
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(boltRecords).Get(boltKey(uint64(at)))
		if len(v) != 9+size {
			return fmt.Errorf("bbolt: no record %d", at)
		}
		dst = append(dst, v[9:]...)
		return nil
	})
	return dst, err
}

func (b *boltStore) LoadMeta() (Meta, error) {
	var m Meta
	err := b.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(boltMeta).Get([]byte("m")); len(v) == 12 {
			m = Meta{Boot: binary.LittleEndian.Uint32(v), NextSeq: binary.LittleEndian.Uint64(v[4:])}
		}
		return nil
	})
	return m, err
}

func (b *boltStore) SaveMeta(m Meta) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		v := binary.LittleEndian.AppendUint32(nil, m.Boot)
		return tx.Bucket(boltMeta).Put([]byte("m"), binary.LittleEndian.AppendUint64(v, m.NextSeq))
	})
}

func (b *boltStore) Usage() int64 {
	var n int64
	b.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

func (b *boltStore) Close() error {
	if err := b.Sync(); err != nil {
		b.db.Close()
		return err
	}
	return b.db.Close()
}

// The contract suite, on bbolt too.
func TestBoltContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, medium)
	}{
		{"RoundTrip", storeRoundTrip},
		{"DropAndCrash", storeDropAndCrash},
		{"Meta", storeMeta},
		{"Order", spoolOrder},
		{"CommitReopen", spoolCommitReopen},
		{"CrashKeepsDurable", spoolCrashKeepsDurable},
		{"Eviction", spoolEviction},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.f(t, medium{
				name:  "bbolt",
				open:  func(t *testing.T) Store { return openBolt(t, dir) },
				crash: func(s Store) { s.(*boltStore).db.Close() },
			})
		})
	}
}
