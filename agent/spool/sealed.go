package spool

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Encryption at rest (spool.encrypt; docs/spool.md "Encryption at rest").
// A SealedStore wraps a Store and encrypts each record's payload with
// AES-256-GCM before the store sees it:
//
//	stored payload = nonce (12) | ciphertext | tag (16)      28 bytes more per record
//	nonce          = prefix (4, random at each Open) | seq (8, big-endian)
//	additional data = seq (8, big-endian)
//
// Nonces never repeat under a key: within one Open the seq is unique (the
// spool never hands a seq out twice, across power cuts included:
// hwtest/powercut checks it in every crash state), and the random prefix
// differs from one Open to the next, so that even a seq handed out again
// after the loss of every meta and segment file meets a fresh prefix. In
// FIPS 140-only mode (GODEBUG=fips140=only) Go refuses caller-chosen GCM
// nonces; the store then uses cipher.NewGCMWithRandomNonce (a 96-bit
// nonce drawn inside the module), in the same format. The seq as
// additional data binds a payload to its record: a frame moved to another
// record fails. A payload that fails authentication is damage: recovery
// drops and counts it like a CRC failure.

// KeyBytes is the size of a spool key.
const KeyBytes = 32

const (
	sealNonce    = 12
	sealTag      = 16
	sealOverhead = sealNonce + sealTag
)

// SealedStore is a Store whose payloads are encrypted (see above).
//
// On a log the choice is per segment (a header flag): with write false
// the store writes plaintext and still reads the sealed segments of an
// earlier run (spool.encrypt turned off, the key kept); with write true
// it reads the plaintext segments of a run before encryption was turned
// on, which stay plaintext until they drain. A log without a SealedStore
// never hands out a sealed record: it counts it lost.
type SealedStore struct {
	Store
	write  bool
	marker sealMarker  // nil: every record is sealed
	aead   cipher.AEAD // caller nonces; nil in FIPS 140-only mode
	random cipher.AEAD // random nonces (FIPS 140-only mode)
	prefix [4]byte
	buf    []byte
	it     Item
}

var _ Store = (*SealedStore)(nil)

// FIPSOnly reports whether the store runs with module-drawn nonces
// (GODEBUG=fips140=only).
func (ss *SealedStore) FIPSOnly() bool { return ss.aead == nil }

// NewSealed wraps st with a key derived from key (KeyBytes, from LoadKey)
// by HKDF-SHA-256. New records are encrypted when write is set; a store
// that cannot mark records per segment (anything but the log) must be
// written sealed.
func NewSealed(st Store, key []byte, write bool) (*SealedStore, error) {
	if len(key) != KeyBytes {
		return nil, fmt.Errorf("spool: key is %d bytes, want %d", len(key), KeyBytes)
	}
	k, err := hkdf.Key(sha256.New, key, nil, "kestrel spool aes-256-gcm v1", 32)
	if err != nil {
		return nil, fmt.Errorf("spool: derive key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("spool: cipher: %w", err)
	}
	ss := &SealedStore{Store: st, write: write}
	if m, ok := st.(sealMarker); ok {
		ss.marker = m
		m.setSealing(write)
	} else if !write {
		return nil, errors.New("spool: a store that cannot mark sealed records must be written sealed")
	}
	if ss.aead, err = cipher.NewGCM(block); err != nil {
		// FIPS 140-only mode: only module-drawn nonces are allowed.
		ss.aead = nil
		if ss.random, err = cipher.NewGCMWithRandomNonce(block); err != nil {
			return nil, fmt.Errorf("spool: cipher: %w", err)
		}
	}
	if _, err := rand.Read(ss.prefix[:]); err != nil {
		return nil, fmt.Errorf("spool: nonce prefix: %w", err)
	}
	return ss, nil
}

func seqAD(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }

// seal returns the stored form of a payload, appended to dst.
func (ss *SealedStore) seal(dst []byte, seq uint64, data []byte) []byte {
	ad := seqAD(seq)
	if ss.aead == nil {
		return ss.random.Seal(dst, nil, data, ad) // nonce | ciphertext | tag
	}
	n := len(dst)
	dst = append(dst, ss.prefix[:]...)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return ss.aead.Seal(dst, dst[n:n+sealNonce], data, ad)
}

var errSealed = errors.New("spool: record fails authentication (damaged, or another key)")

// open authenticates and decrypts a stored payload, appending to dst.
func (ss *SealedStore) open(dst []byte, seq uint64, stored []byte) ([]byte, error) {
	if len(stored) < sealOverhead {
		return dst, errSealed
	}
	ad := seqAD(seq)
	var out []byte
	var err error
	if ss.aead == nil {
		out, err = ss.random.Open(dst, nil, stored, ad)
	} else {
		out, err = ss.aead.Open(dst, stored[:sealNonce], stored[sealNonce:], ad)
	}
	if err != nil {
		return dst, errSealed
	}
	return out, nil
}

func (ss *SealedStore) sealedAt(at Loc) bool { return ss.marker == nil || ss.marker.sealedAt(at) }

// Append implements Store.
func (ss *SealedStore) Append(it *Item) (Loc, error) {
	if !ss.write {
		return ss.Store.Append(it)
	}
	if len(it.Data)+sealOverhead > MaxPayload {
		return 0, ErrTooLarge
	}
	ss.buf = ss.seal(ss.buf[:0], it.Seq, it.Data)
	ss.it = Item{Seq: it.Seq, Priority: it.Priority, Time: it.Time, Data: ss.buf}
	return ss.Store.Append(&ss.it)
}

// Read implements Store, taking the seq from the nonce (the Spool calls
// ReadSeq, which checks it; in FIPS 140-only mode the nonce is random and
// only ReadSeq works).
func (ss *SealedStore) Read(at Loc, size int, dst []byte) ([]byte, error) {
	if !ss.sealedAt(at) {
		return ss.Store.Read(at, size, dst)
	}
	stored, err := ss.Store.Read(at, size+sealOverhead, nil)
	if err != nil {
		return dst, err
	}
	if ss.aead == nil || len(stored) < sealOverhead {
		return dst, errSealed
	}
	return ss.open(dst, binary.BigEndian.Uint64(stored[4:sealNonce]), stored)
}

// ReadSeq reads and decrypts the payload of record seq at `at`; size is
// the plaintext size.
func (ss *SealedStore) ReadSeq(seq uint64, at Loc, size int, dst []byte) ([]byte, error) {
	if !ss.sealedAt(at) {
		return ss.Store.Read(at, size, dst)
	}
	stored, err := ss.Store.Read(at, size+sealOverhead, nil)
	if err != nil {
		return dst, err
	}
	out, err := ss.open(dst, seq, stored)
	if err != nil {
		return dst, fmt.Errorf("spool: record %d: %w", seq, err)
	}
	return out, nil
}

// Recover implements Store: every record is authenticated before it is
// handed on. One that fails is dropped (persisted as an acknowledgement
// with the next group commit) and counted as a damaged region and a lost
// record, as a checksum failure is.
func (ss *SealedStore) Recover(fn func(RecMeta)) (RecoverStats, error) {
	var metas []RecMeta
	st, err := ss.Store.Recover(func(m RecMeta) { metas = append(metas, m) })
	if err != nil {
		return st, err
	}
	var buf []byte
	var bad []RecMeta
	st.Records = 0
	for _, m := range metas {
		if ss.marker != nil && !m.Sealed {
			st.Records++
			fn(m) // plaintext, from before encryption was turned on
			continue
		}
		ok := m.Size >= sealOverhead
		if ok {
			var stored []byte
			stored, err = ss.Store.Read(m.At, m.Size, buf[:0])
			if err == nil {
				buf = stored
				_, err = ss.open(nil, m.Seq, stored)
			}
			ok = err == nil
		}
		if !ok {
			bad = append(bad, m)
			continue
		}
		m.Size -= sealOverhead
		st.Records++
		fn(m)
	}
	for i, m := range bad {
		ss.Store.Drop(m.Seq, m.At)
		if i == 0 || bad[i-1].Seq+1 != m.Seq {
			st.Dropped++
		}
		st.DroppedBytes += int64(m.Size)
		st.addLoss(1, m.Seq, m.Seq)
	}
	return st, nil
}

// unwrap is the store inside.
func (ss *SealedStore) unwrap() Store { return ss.Store }

// setSealing tells the log whether new segments are sealed and whether a
// SealedStore reads the sealed ones. Called before Recover.
func (s *LogStore) setSealing(write bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealNew, s.keyed = write, true
	for i := range s.streams {
		if a := s.streams[i].active; a != nil && a.end == 0 {
			a.sealed = write
		}
	}
}

// sealedAt reports whether the record at `at` is in a sealed segment.
func (s *LogStore) sealedAt(at Loc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg := s.segs[uint32(at>>32)]
	return seg != nil && seg.sealed
}

// sealMarker is a Store that marks which records are sealed (the log);
// on any other every record is.
type sealMarker interface {
	setSealing(write bool)
	sealedAt(Loc) bool
}
