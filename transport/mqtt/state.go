package mqtt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tinylib/msgp/msgp"
)

// stateMessage encodes the retained birth (online) or death (offline) map.
// The core keys come first and cannot be overridden by extra.
func stateMessage(online bool, boot uint32, bdseq uint64, version string, plaintext bool, now int64, extra map[string]any) ([]byte, error) {
	core := 5
	if plaintext {
		core++
	}
	var keys []string
	for k := range extra {
		switch k {
		case "online", "boot", "bdseq", "version", "time", "plaintext":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, 128)
	b = msgp.AppendMapHeader(b, uint32(core+len(keys)))
	b = msgp.AppendString(b, "online")
	b = msgp.AppendBool(b, online)
	b = msgp.AppendString(b, "boot")
	b = msgp.AppendUint32(b, boot)
	b = msgp.AppendString(b, "bdseq")
	b = msgp.AppendUint64(b, bdseq)
	b = msgp.AppendString(b, "version")
	b = msgp.AppendString(b, version)
	b = msgp.AppendString(b, "time")
	b = msgp.AppendInt64(b, now)
	if plaintext {
		b = msgp.AppendString(b, "plaintext")
		b = msgp.AppendBool(b, true)
	}
	var err error
	for _, k := range keys {
		b = msgp.AppendString(b, k)
		if b, err = msgp.AppendIntf(b, extra[k]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// DecodeState decodes a state message (birth or Last Will) into a map, for
// tools and tests.
func DecodeState(payload []byte) (map[string]any, error) {
	v, rest, err := msgp.ReadIntfBytes(payload)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("state message: not a map")
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("state message: %d trailing bytes", len(rest))
	}
	return m, nil
}
