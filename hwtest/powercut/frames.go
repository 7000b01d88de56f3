package powercut

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// The checker's own reading of the spool's segment files (docs/spool.md,
// "On disk"): a 16-byte header ("KSPL", version, flags, id, CRC32C), then
// frames {crc32c u32 LE seeded with the CRC32C of the id, uvarint length,
// body: kind<<4|priority, ...}; kinds 1 (record) and 4 (record with an
// absolute seq, version 3) carry a payload, 2, 3 and 5 do not. It does not decode sequence deltas: the workload's payloads name
// their own record (payload), so a frame found anywhere, after damage
// included, identifies its record. intactFrames lists every record frame
// of the segment's own id that is whole on the medium.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type intactFrame struct {
	seq  uint64
	size int // frame bytes
	// nonce of a sealed payload (segment flag 2): the checker requires
	// that no nonce on the medium serves two records.
	nonce  [12]byte
	sealed bool
}

// sealedAEAD opens the payloads of the sealed variant as docs/spool.md
// ("Encryption at rest") specifies, written here from the spec: key
// HKDF-SHA-256(spool key, info "kestrel spool aes-256-gcm v1"), stored
// payload nonce (12) | ciphertext | tag (16), nonce = prefix (4) | seq
// (8, BE), additional data the seq (8, BE).
var sealedAEAD = sync.OnceValue(func() cipher.AEAD {
	k, err := hkdf.Key(sha256.New, sealedKey, nil, "kestrel spool aes-256-gcm v1", 32)
	if err != nil {
		panic(err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err) // fips140=only: the checker does not run there
	}
	return g
})

// unseal returns the payload and the nonce of a sealed record's stored payload.
func unseal(stored []byte) ([]byte, [12]byte, bool) {
	var nonce [12]byte
	if len(stored) < 28 {
		return nil, nonce, false
	}
	copy(nonce[:], stored)
	out, err := sealedAEAD().Open(nil, nonce[:], stored[12:], stored[4:12])
	return out, nonce, err == nil
}

// recordPayload is the payload of a record frame's body: after the kind
// byte, two varints (delta record) or three (absolute record).
func recordPayload(body []byte) ([]byte, bool) {
	n := 2
	if body[0]>>4 == 4 {
		n = 3
	}
	p := 1
	for range n {
		_, w := binary.Uvarint(body[p:])
		if w <= 0 {
			return nil, false
		}
		p += w
	}
	return body[p:], true
}

func intactFrames(dir string) ([]intactFrame, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []intactFrame
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "seg-") || !strings.HasSuffix(name, ".log") {
			continue // free-*.log: drained files, every record in them acknowledged or evicted
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "seg-"), ".log"), 16, 32)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = scanSegment(b, uint32(id), out)
	}
	return out, nil
}

func scanSegment(b []byte, id uint32, out []intactFrame) []intactFrame {
	const hdr = 16
	if len(b) < hdr || string(b[:4]) != "KSPL" {
		return out
	}
	var idb [4]byte
	binary.LittleEndian.PutUint32(idb[:], id)
	seed := crc32.Checksum(idb[:], castagnoli)
	isSealed := b[5]&2 != 0
	for off := hdr; off+6 < len(b); {
		if b[off] == 0 && b[off+4] == 0 { // zeros: preallocated space (skip a run fast)
			off++
			continue
		}
		n, w := binary.Uvarint(b[off+4:])
		end := off + 4 + w + int(n)
		if w <= 0 || n == 0 || n > 1<<21 || end > len(b) || b[off+4+w]>>4 < 1 || b[off+4+w]>>4 > 5 ||
			crc32.Update(seed, castagnoli, b[off+4:end]) != binary.LittleEndian.Uint32(b[off:]) {
			off++
			continue
		}
		if body := b[off+4+w : end]; isSealed && (body[0]>>4 == 1 || body[0]>>4 == 4) {
			if stored, ok := recordPayload(body); ok {
				if pl, nonce, ok := unseal(stored); ok {
					if seq, _, ok := parsePayload(pl); ok {
						out = append(out, intactFrame{seq: seq, size: end - off, nonce: nonce, sealed: true})
					}
				}
			}
		} else if body[0]>>4 == 1 || body[0]>>4 == 4 { // a record, delta or absolute (version 3)
			for i := 1; i < len(body) && i < 40; i++ { // the payload follows the record header's varints
				if seq, _, ok := parsePayload(body[i:]); ok {
					out = append(out, intactFrame{seq: seq, size: end - off})
					break
				}
			}
		}
		off = end
	}
	return out
}
