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
	Format    string          `json:"kestrel"`
	Fleet     string          `json:"fleet,omitempty"`
	Device    string          `json:"device"`
	DeviceKey string          `json:"device_key"`          // base64 Ed25519 public key, as in the state message
	Enrolment json.RawMessage `json:"enrolment,omitempty"` // the platform's enrolment record, when there is one
	From      string          `json:"from,omitempty"`      // the range exported, RFC 3339
	To        string          `json:"to,omitempty"`
	Exported  string          `json:"exported,omitempty"`
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
