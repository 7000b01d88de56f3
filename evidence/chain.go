package evidence

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// DigestSize is the size of a chain digest (SHA-256).
const DigestSize = sha256.Size

// Digest is one link of the chain.
type Digest [DigestSize]byte

// Genesis is the digest before a device's first record: all zeros.
var Genesis Digest

// MaxDevice bounds a device id in the canonical encoding.
const MaxDevice = 255

// SignFormat prefixes the message a checkpoint's signature covers, so a
// signature by the device key over anything else (a fleet report,
// transport/fleet's kestrel-device/1) cannot pass for a checkpoint.
const SignFormat = "kestrel-checkpoint/1\n"

// AppendCanonical appends the canonical encoding of a record
// (docs/evidence.md, "Canonical encoding"):
//
//	u8 len(device) | device | u32be boot | u64be seq | i64be time_ms | u8 kind | body
//
// where body is the msgpack tuple of wire.AppendBody, a position's
// optional fields whose Has flag is clear taken as zero (the wire does
// not carry them). Priority is not covered: it is transport policy.
func AppendCanonical(dst []byte, r *kestrel.Record) ([]byte, error) {
	if len(r.Device) > MaxDevice {
		return dst, fmt.Errorf("evidence: device id of %d bytes (max %d)", len(r.Device), MaxDevice)
	}
	if r.Body == nil {
		return dst, errors.New("evidence: record has no body")
	}
	dst = append(dst, byte(len(r.Device)))
	dst = append(dst, r.Device...)
	dst = binary.BigEndian.AppendUint32(dst, r.Boot)
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Time))
	dst = append(dst, byte(r.Body.Kind()))
	body := r.Body
	if p, ok := body.(*kestrel.Position); ok {
		body = normalised(p)
	}
	return wire.AppendBody(dst, body)
}

// normalised is a position as it decodes from the wire: an optional field
// without its flag is zero.
func normalised(p *kestrel.Position) *kestrel.Position {
	n := *p
	if n.Flags&kestrel.HasAlt == 0 {
		n.Alt = 0
	}
	if n.Flags&kestrel.HasSpeed == 0 {
		n.Speed = 0
	}
	if n.Flags&kestrel.HasTrack == 0 {
		n.Track = 0
	}
	if n.Flags&kestrel.HasSats == 0 {
		n.Sats = 0
	}
	if n.Flags&kestrel.HasHDOP == 0 {
		n.HDOP = 0
	}
	if n.Flags&kestrel.HasEPH == 0 {
		n.EPH = 0
	}
	if n.Flags&kestrel.HasEPV == 0 {
		n.EPV = 0
	}
	return &n
}

// Next is the digest of r after prev: SHA-256(prev || canonical(r)).
// buf is scratch space, returned for reuse.
func Next(prev Digest, r *kestrel.Record, buf []byte) (Digest, []byte, error) {
	buf = append(buf[:0], prev[:]...)
	buf, err := AppendCanonical(buf, r)
	if err != nil {
		return Digest{}, buf, err
	}
	return sha256.Sum256(buf), buf, nil
}

// SignedMessage is what a checkpoint's signature covers: SignFormat, then
// the canonical encoding of the checkpoint record with Sig empty.
func SignedMessage(r *kestrel.Record) ([]byte, error) {
	c, ok := r.Body.(*kestrel.Checkpoint)
	if !ok || c == nil {
		return nil, fmt.Errorf("evidence: record seq %d is not a checkpoint", r.Seq)
	}
	u := *c
	u.Sig = nil
	rr := *r
	rr.Body = &u
	return AppendCanonical([]byte(SignFormat), &rr)
}

// VerifyCheckpoint checks a checkpoint's shape and its signature by pub.
func VerifyCheckpoint(pub ed25519.PublicKey, r *kestrel.Record) error {
	c, ok := r.Body.(*kestrel.Checkpoint)
	if !ok || c == nil {
		return fmt.Errorf("record seq %d is not a checkpoint", r.Seq)
	}
	if len(c.Head) != DigestSize {
		return fmt.Errorf("checkpoint seq %d: head of %d bytes (want %d)", r.Seq, len(c.Head), DigestSize)
	}
	if len(c.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("checkpoint seq %d: signature of %d bytes (want %d)", r.Seq, len(c.Sig), ed25519.SignatureSize)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("device key of %d bytes (want %d)", len(pub), ed25519.PublicKeySize)
	}
	msg, err := SignedMessage(r)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, msg, c.Sig) {
		return fmt.Errorf("checkpoint seq %d: signature does not verify with the device key", r.Seq)
	}
	return nil
}

// Signer is the device key (agent/identity.Identity).
type Signer interface {
	Sign(msg []byte) []byte
}

// Head is the chain state that must survive a restart: the last chained
// record and its digest.
type Head struct {
	Seq    uint64
	Digest Digest
}

// Chain is the device's running chain. It is not safe for concurrent use:
// the agent holds it under its stamping lock.
type Chain struct {
	head     Head
	fromSeq  uint64 // seq of the last checkpoint
	count    uint64 // records chained since it
	buf      []byte
	lastKind kestrel.Kind
}

// NewChain continues from a persisted head (the zero Head for a new
// device).
func NewChain(h Head) *Chain { return &Chain{head: h, fromSeq: h.Seq} }

// Head is the current head.
func (c *Chain) Head() Head { return c.head }

// Since is the number of records chained since the last checkpoint.
func (c *Chain) Since() uint64 { return c.count }

// Add chains a stamped record: its digest becomes the head.
func (c *Chain) Add(r *kestrel.Record) error {
	d, buf, err := Next(c.head.Digest, r, c.buf)
	c.buf = buf
	if err != nil {
		return err
	}
	c.head = Head{Seq: r.Seq, Digest: d}
	if _, ok := r.Body.(*kestrel.Checkpoint); ok {
		c.fromSeq, c.count = r.Seq, 0
	} else {
		c.count++
	}
	return nil
}

// Checkpoint fills r (already stamped with device, boot, seq and time) as
// a checkpoint over the chain as it stands and signs it. It does not chain
// it: the caller calls Add once the record is spooled.
func (c *Chain) Checkpoint(r *kestrel.Record, reason kestrel.CheckpointReason, s Signer) error {
	cp := &kestrel.Checkpoint{Reason: reason, FromSeq: c.fromSeq, LastSeq: c.head.Seq, Count: c.count,
		Head: append([]byte(nil), c.head.Digest[:]...)}
	if reason == kestrel.CheckpointBoot {
		cp.FromSeq, cp.Count = c.head.Seq, 0
	}
	r.Body = cp
	msg, err := SignedMessage(r)
	if err != nil {
		return err
	}
	cp.Sig = s.Sign(msg)
	return nil
}
