package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

func openSealedSpool(t *testing.T, dir string, key []byte, encrypt bool) *Spool {
	t.Helper()
	s, err := Open(dir, Options{SyncInterval: time.Hour, SegmentBytes: 64 << 10, Key: key, Encrypt: encrypt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appendMarked(t *testing.T, s *Spool, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		q := s.NextSeq()
		if _, err := s.Append(Item{Seq: q, Priority: kestrel.PriorityNormal, Time: int64(q), Data: retPayload(q)}); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, q)
	}
	s.syncOnce()
	return seqs
}

func takeAll(s *Spool) map[uint64][]byte {
	got := map[uint64][]byte{}
	for _, it := range s.Take(nil, 1<<20, 0) {
		got[it.Seq] = it.Data
	}
	return got
}

// With spool.encrypt no payload is on the medium in the clear, and every
// record reads back whole after a reopen (and after a crash).
func TestSealedNoPlaintextOnMedium(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		dir := t.TempDir()
		s := openSealedSpool(t, dir, testKey, encrypt)
		seqs := appendMarked(t, s, 500)
		s.store.(*SealedStore).Store.(*LogStore).abandon() // a crash
		s.cancel()
		s.wg.Wait()
		found := scanMarkers(filesUnder(t, dir))
		if encrypt && len(found) > 0 {
			t.Fatalf("sealed spool: %d payloads readable in the clear on the medium", len(found))
		}
		if !encrypt && len(found) != len(seqs) {
			t.Fatalf("control (encrypt off): %d of %d markers found in the clear", len(found), len(seqs))
		}
		s = openSealedSpool(t, dir, testKey, encrypt)
		got := takeAll(s)
		for _, q := range seqs {
			if !bytes.Equal(got[q], retPayload(q)) {
				t.Fatalf("encrypt=%v: seq %d read back %q", encrypt, q, got[q])
			}
		}
		if m := s.Metrics(); m.RecoveryDropped != 0 || m.RecoveryLostRecords != 0 {
			t.Fatalf("clean reopen counted damage: %+v", m)
		}
		s.Close()
	}
}

// reCRC rewrites the checksum of every frame of a segment file in place,
// so that only the authentication tag can tell a tampered payload.
func reCRC(t *testing.T, path string, id uint32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seed := segSeed(id)
	for off := segHeaderLen; off+5 < len(b); {
		n, w := binary.Uvarint(b[off+4:])
		if w <= 0 || n == 0 || off+4+w+int(n) > len(b) {
			break
		}
		end := off + 4 + w + int(n)
		binary.LittleEndian.PutUint32(b[off:], crc32.Update(seed, castagnoli, b[off+4:end]))
		off = end
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A payload changed on the medium with its frame checksum made valid
// again (a forger, or damage the CRC misses) fails authentication:
// recovery drops it and counts it as damage and a lost record, exactly
// as a checksum failure. The control: the same change on a plaintext
// spool passes the checksum and is delivered altered.
func TestSealedTamperCountedAsDamage(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		dir := t.TempDir()
		s := openSealedSpool(t, dir, testKey, encrypt)
		seqs := appendMarked(t, s, 10)
		s.Close()
		path := filepath.Join(dir, segName(1))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The fifth record's payload: flip its last byte (in the tag when sealed).
		victim := seqs[4]
		fs := frameState{seed: segSeed(1)}
		off := segHeaderLen
		for {
			fr, n, err := decodeFrame(b[off:], &fs, nil)
			if err != nil {
				t.Fatalf("frame at %d: %v", off, err)
			}
			if fr.isRecord() && fr.item.Seq == victim {
				b[off+n-1] ^= 0x01
				break
			}
			off += n
		}
		os.WriteFile(path, b, 0o600)
		reCRC(t, path, 1)
		s = openSealedSpool(t, dir, testKey, encrypt)
		got := takeAll(s)
		m := s.Metrics()
		s.Close()
		if !encrypt {
			if len(got) != 10 || bytes.Equal(got[victim], retPayload(victim)) {
				t.Fatalf("control: the altered plaintext record should pass its recomputed checksum; got %d records", len(got))
			}
			continue
		}
		if _, ok := got[victim]; ok {
			t.Fatalf("a tampered sealed record was handed out: %q", got[victim])
		}
		if len(got) != 9 || m.RecoveryDropped != 1 || m.RecoveryLostRecords != 1 ||
			len(m.RecoveryLost) != 1 || m.RecoveryLost[0].First != victim {
			t.Fatalf("tamper not counted as one damaged region and one lost record: %d kept, %+v", len(got), m)
		}
		for q, d := range got {
			if !bytes.Equal(d, retPayload(q)) {
				t.Fatalf("seq %d altered: %q", q, d)
			}
		}
	}
}

// Another key (a replaced key file) reads nothing: every record is
// counted lost, none is handed out as garbage.
func TestSealedWrongKeyCountsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openSealedSpool(t, dir, testKey, true)
	appendMarked(t, s, 50)
	s.Close()
	other := bytes.Repeat([]byte{0x11}, KeyBytes)
	s = openSealedSpool(t, dir, other, true)
	got := takeAll(s)
	m := s.Metrics()
	s.Close()
	if len(got) != 0 || m.RecoveryLostRecords != 50 {
		t.Fatalf("wrong key: %d records handed out, %d counted lost", len(got), m.RecoveryLostRecords)
	}
}

// Turning encryption on keeps the plaintext backlog (delivered as it
// was); turning it off with the key kept still reads the sealed one; a
// spool opened with no key at all counts sealed records lost and never
// hands their ciphertext out as a payload.
func TestSealedModeChanges(t *testing.T) {
	dir := t.TempDir()
	s := openSealedSpool(t, dir, nil, false)
	plain := appendMarked(t, s, 20)
	s.Close()
	s = openSealedSpool(t, dir, testKey, true)
	sealed := appendMarked(t, s, 20)
	s.Close()
	s = openSealedSpool(t, dir, testKey, false)
	after := appendMarked(t, s, 20)
	got := takeAll(s)
	s.Close()
	for _, q := range slices.Concat(plain, sealed, after) {
		if !bytes.Equal(got[q], retPayload(q)) {
			t.Fatalf("seq %d after on, off: %q", q, got[q])
		}
	}
	s = openSealedSpool(t, dir, nil, false)
	got = takeAll(s)
	m := s.Metrics()
	s.Close()
	for q, d := range got {
		if !bytes.Equal(d, retPayload(q)) {
			t.Fatalf("no key: seq %d handed out as %q", q, d)
		}
	}
	if len(got) != 40 || m.RecoveryLostRecords != 20 {
		t.Fatalf("no key: %d records handed out (want the 40 plaintext), %d counted lost (want the 20 sealed)", len(got), m.RecoveryLostRecords)
	}
}

// Nonces never repeat: across lives ended by crashes (the seq is never
// handed out again, and each Open draws a new prefix), no two stored
// payloads share a nonce.
func TestSealedNoncesNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	seen := map[[sealNonce]byte]uint64{}
	for life := range 6 {
		s := openSealedSpool(t, dir, testKey, true)
		appendMarked(t, s, 100)
		if life%2 == 0 {
			s.Commit(slices.Collect(func(yield func(uint64) bool) {
				for q := range takeAll(s) {
					if !yield(q) {
						return
					}
				}
			}))
			s.syncOnce()
		}
		ls := s.store.(*SealedStore).Store.(*LogStore)
		// Every stored payload on the medium, read back raw.
		for id, seg := range ls.segs {
			if seg.f == nil {
				continue
			}
			b, _ := os.ReadFile(filepath.Join(dir, segName(id)))
			fs := frameState{seed: seg.seed}
			for off := segHeaderLen; off < int(seg.written); {
				fr, n, err := decodeFrame(b[off:], &fs, nil)
				if err != nil {
					break
				}
				if fr.isRecord() {
					var nonce [sealNonce]byte
					copy(nonce[:], fr.item.Data)
					if prev, ok := seen[nonce]; ok && prev != fr.item.Seq {
						t.Fatalf("nonce %x used for seq %d and %d", nonce, prev, fr.item.Seq)
					}
					seen[nonce] = fr.item.Seq
				}
				off += n
			}
		}
		ls.abandon()
		s.cancel()
		s.wg.Wait()
	}
	if len(seen) < 300 {
		t.Fatalf("only %d nonces seen", len(seen))
	}
}

// Under GODEBUG=fips140=only Go refuses caller-chosen GCM nonces: the
// store draws them inside the module instead, same format, and records
// sealed either way read back in the other mode.
func TestSealedFIPSOnly(t *testing.T) {
	dir := os.Getenv("KESTREL_FIPS_DIR")
	if dir == "" {
		dir = t.TempDir()
		s := openSealedSpool(t, dir, testKey, true)
		appendMarked(t, s, 10) // caller nonces
		if s.store.(*SealedStore).FIPSOnly() {
			t.Fatal("FIPS-only nonces outside fips140=only")
		}
		s.Close()
		cmd := exec.Command(os.Args[0], "-test.run=^TestSealedFIPSOnly$", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG=fips140=only", "KESTREL_FIPS_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("under fips140=only: %v\n%s", err, out)
		}
		s = openSealedSpool(t, dir, testKey, true)
		got := takeAll(s)
		s.Close()
		if len(got) != 20 {
			t.Fatalf("after the fips140=only run: %d records, want 20", len(got))
		}
		for q, d := range got {
			if !bytes.Equal(d, retPayload(q)) {
				t.Fatalf("seq %d: %q", q, d)
			}
		}
		return
	}
	s := openSealedSpool(t, dir, testKey, true)
	defer s.Close()
	if !s.store.(*SealedStore).FIPSOnly() {
		t.Fatal("fips140=only: the store still uses caller nonces")
	}
	if got := takeAll(s); len(got) != 10 {
		t.Fatalf("fips140=only: read %d of the 10 records sealed outside it", len(got))
	}
	s.Release(nil)
	appendMarked(t, s, 10) // module-drawn nonces
}

// Sealed segments are version 4, which a binary from before encryption
// (it reads versions 1 to 3) refuses as damage rather than send ciphertext
// as records after a rollback; plaintext segments stay version 3.
func TestSealedSegmentVersion(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		dir := t.TempDir()
		s := openSealedSpool(t, dir, testKey, encrypt)
		appendMarked(t, s, 5)
		s.Close()
		b, err := os.ReadFile(filepath.Join(dir, segName(1)))
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]byte{false: 3, true: 4}[encrypt]
		if b[4] != want || (b[5]&segSealed != 0) != encrypt {
			t.Fatalf("encrypt=%v: segment version %d flags %d, want version %d", encrypt, b[4], b[5], want)
		}
	}
}
