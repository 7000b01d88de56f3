package evidence

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// BundleFormat names the export bundle format (docs/evidence.md).
const BundleFormat = "kestrel-evidence/1"

// Limits of a bundle, checked while reading.
const (
	MaxLine    = 256 << 10 // one JSON line: a record is at most wire's spool payload
	MaxRecords = 2_000_000 // about 23 days of 1 Hz fixes with their status records
)

// Header is the first line of a bundle.
type Header struct {
	Format    string `json:"kestrel"`
	Fleet     string `json:"fleet,omitempty"`
	Device    string `json:"device"`
	DeviceKey string `json:"device_key"` // base64 Ed25519 public key, as in the state message
	// Enrolment is the platform's enrolment history of the device, oldest
	// first (docs/evidence.md, "Enrolment"): the keys the verifier trusts,
	// each from its from_seq on. Empty: only device_key (or --key).
	Enrolment []Enrolment `json:"enrolment,omitempty"`
	From      string      `json:"from,omitempty"` // the range exported, RFC 3339
	To        string      `json:"to,omitempty"`
	Exported  string      `json:"exported,omitempty"`
	// FirstSeq, when not 0, is the seq of the checkpoint the bundle starts
	// at (an export of a range): the verifier checks its signature and
	// anchors the next checkpoint's range on it, but does not ask for the
	// records before it.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	// Notes are what the exporter found while rebuilding the records
	// (a stored row that is not one the device could have sent), as
	// problems; the verifier reports them first.
	Notes []Problem `json:"notes,omitempty"`
}

// Enrolment is one act of pinning a device's public key (kestrelctl
// device enrol). A re-enrolment starts a new key at FromSeq: checkpoints
// with seq >= FromSeq must be signed by it, those before by the key it
// replaced.
type Enrolment struct {
	Fleet         string `json:"fleet"`
	Device        string `json:"device"`
	DeviceKey     string `json:"device_key"` // base64 Ed25519 public key
	KeyID         string `json:"key_id"`
	FromSeq       uint64 `json:"from_seq"`
	Enrolled      string `json:"enrolled"` // RFC 3339
	By            string `json:"by"`
	Source        string `json:"source"` // where the key came from: "key" (given), "broker" (the retained state message)
	Note          string `json:"note,omitempty"`
	PreviousKeyID string `json:"previous_key_id,omitempty"`
}

// KeySpans are the keys an enrolment history trusts, in from_seq order:
// each enrolment applies from its FromSeq on, cutting short the ones
// before it.
func KeySpans(es []Enrolment) ([]KeySpan, error) {
	var out []KeySpan
	for i, e := range es {
		k, err := base64.StdEncoding.DecodeString(e.DeviceKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("enrolment %d: device_key is not a base64 Ed25519 public key", i+1)
		}
		for len(out) > 0 && out[len(out)-1].FromSeq >= e.FromSeq {
			out = out[:len(out)-1]
		}
		out = append(out, KeySpan{Key: ed25519.PublicKey(k), FromSeq: e.FromSeq})
	}
	return out, nil
}

// KeySpan is a key trusted for the checkpoints from FromSeq on (until the
// next span's FromSeq).
type KeySpan struct {
	Key     ed25519.PublicKey
	FromSeq uint64
}

// line is every line after the header: one record in the spool's
// single-record form (wire.AppendRecord), hex.
type line struct {
	Record string `json:"record"`
}

// Bundle is a parsed export.
type Bundle struct {
	Header  Header
	Key     ed25519.PublicKey
	Records []kestrel.Record
}

// WriteHeader writes the header line.
func WriteHeader(w io.Writer, h Header) error {
	h.Format = BundleFormat
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteRecord writes one record line; buf is scratch, returned for reuse.
func WriteRecord(w io.Writer, r *kestrel.Record, buf []byte) ([]byte, error) {
	buf, err := wire.AppendRecord(buf[:0], r)
	if err != nil {
		return buf, err
	}
	l, _ := json.Marshal(line{Record: hex.EncodeToString(buf)})
	_, err = w.Write(append(l, '\n'))
	return buf, err
}

// WriteBundle writes b whole: its header, then its records in order.
func WriteBundle(w io.Writer, b *Bundle) error {
	out := bufio.NewWriter(w)
	if err := WriteHeader(out, b.Header); err != nil {
		return err
	}
	var buf []byte
	var err error
	for i := range b.Records {
		if buf, err = WriteRecord(out, &b.Records[i], buf); err != nil {
			return fmt.Errorf("write bundle: seq %d: %w", b.Records[i].Seq, err)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// ReadBundle parses a bundle. Any malformed line fails it with the line's
// number: a disclosure bundle is verified whole or not at all.
func ReadBundle(r io.Reader) (*Bundle, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var b Bundle
	n := 0
	for sc.Scan() {
		n++
		text := bytes.TrimSpace(sc.Bytes())
		if n == 1 {
			dec := json.NewDecoder(bytes.NewReader(text))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&b.Header); err != nil {
				return nil, fmt.Errorf("bundle line 1: header: %w", err)
			}
			if b.Header.Format != BundleFormat {
				return nil, fmt.Errorf("bundle line 1: format %q (want %q)", b.Header.Format, BundleFormat)
			}
			key, err := base64.StdEncoding.DecodeString(b.Header.DeviceKey)
			if err != nil || len(key) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("bundle line 1: device_key is not a base64 Ed25519 public key")
			}
			b.Key = ed25519.PublicKey(key)
			if len(b.Header.Device) == 0 || len(b.Header.Device) > MaxDevice {
				return nil, fmt.Errorf("bundle line 1: device id of %d bytes", len(b.Header.Device))
			}
			continue
		}
		if len(text) == 0 {
			continue
		}
		if len(b.Records) >= MaxRecords {
			return nil, fmt.Errorf("bundle line %d: more than %d records", n, MaxRecords)
		}
		var l line
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("bundle line %d: %w", n, err)
		}
		raw, err := hex.DecodeString(l.Record)
		if err != nil {
			return nil, fmt.Errorf("bundle line %d: record is not hex: %w", n, err)
		}
		rec, err := wire.DecodeRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("bundle line %d: %w", n, err)
		}
		if rec.Device != b.Header.Device {
			return nil, fmt.Errorf("bundle line %d: record of device %q in a bundle of %q", n, rec.Device, b.Header.Device)
		}
		b.Records = append(b.Records, rec)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("bundle line %d: longer than %d bytes", n+1, MaxLine)
		}
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if n == 0 {
		return nil, errors.New("bundle: empty (no header line)")
	}
	return &b, nil
}
