package wire

import (
	"errors"
	"fmt"

	kestrel "github.com/kestrel-edge/kestrel"
)

// ErrKind is returned for a record whose kind this version cannot carry.
var ErrKind = errors.New("unknown record kind")

func bodyKind(b kestrel.Body) (kestrel.Kind, error) {
	switch v := b.(type) {
	case *kestrel.Position:
		if v != nil {
			return kestrel.KindPosition, nil
		}
	case *kestrel.GPSStatus:
		if v != nil {
			return kestrel.KindGPSStatus, nil
		}
	case *kestrel.RadioStatus:
		if v != nil {
			return kestrel.KindRadio, nil
		}
	case *kestrel.Accel:
		if v != nil {
			return kestrel.KindAccel, nil
		}
	case *kestrel.Battery:
		if v != nil {
			return kestrel.KindBattery, nil
		}
	case *kestrel.Thermal:
		if v != nil {
			return kestrel.KindThermal, nil
		}
	case *kestrel.Event:
		if v != nil {
			return kestrel.KindEvent, nil
		}
	case *kestrel.LinkUsage:
		if v != nil {
			return kestrel.KindLink, nil
		}
	case *kestrel.ExecAudit:
		if v != nil {
			return kestrel.KindExec, nil
		}
	case *kestrel.Checkpoint:
		if v != nil {
			return kestrel.KindCheckpoint, nil
		}
	case nil:
		return 0, fmt.Errorf("%w: record has no body", ErrKind)
	default:
		return 0, fmt.Errorf("%w: body type %T", ErrKind, b)
	}
	return 0, fmt.Errorf("%w: nil %T body", ErrKind, b)
}

// appendBody appends the msgp tuple of a body (checked by bodyKind).
func appendBody(dst []byte, b kestrel.Body) ([]byte, error) {
	switch v := b.(type) {
	case *kestrel.Position:
		return (*wPosition)(v).MarshalMsg(dst)
	case *kestrel.GPSStatus:
		return (*wGPSStatus)(v).MarshalMsg(dst)
	case *kestrel.RadioStatus:
		return (*wRadioStatus)(v).MarshalMsg(dst)
	case *kestrel.Accel:
		return (*wAccel)(v).MarshalMsg(dst)
	case *kestrel.Battery:
		return (*wBattery)(v).MarshalMsg(dst)
	case *kestrel.Thermal:
		return (*wThermal)(v).MarshalMsg(dst)
	case *kestrel.Event:
		return (*wEvent)(v).MarshalMsg(dst)
	case *kestrel.LinkUsage:
		return (*wLinkUsage)(v).MarshalMsg(dst)
	case *kestrel.ExecAudit:
		return (*wExecAudit)(v).MarshalMsg(dst)
	case *kestrel.Checkpoint:
		return (*wCheckpoint)(v).MarshalMsg(dst)
	}
	return dst, fmt.Errorf("%w: body type %T", ErrKind, b)
}

func decodeBody(b []byte, k kestrel.Kind) (kestrel.Body, []byte, error) {
	var (
		body kestrel.Body
		rest []byte
		err  error
	)
	switch k {
	case kestrel.KindPosition:
		v := new(kestrel.Position)
		body = v
		rest, err = (*wPosition)(v).UnmarshalMsg(b)
	case kestrel.KindGPSStatus:
		v := new(kestrel.GPSStatus)
		body = v
		rest, err = (*wGPSStatus)(v).UnmarshalMsg(b)
	case kestrel.KindRadio:
		v := new(kestrel.RadioStatus)
		body = v
		rest, err = (*wRadioStatus)(v).UnmarshalMsg(b)
	case kestrel.KindAccel:
		v := new(kestrel.Accel)
		body = v
		rest, err = (*wAccel)(v).UnmarshalMsg(b)
	case kestrel.KindBattery:
		v := new(kestrel.Battery)
		body = v
		rest, err = (*wBattery)(v).UnmarshalMsg(b)
	case kestrel.KindThermal:
		v := new(kestrel.Thermal)
		body = v
		rest, err = (*wThermal)(v).UnmarshalMsg(b)
	case kestrel.KindEvent:
		v := new(kestrel.Event)
		body = v
		rest, err = (*wEvent)(v).UnmarshalMsg(b)
	case kestrel.KindLink:
		v := new(kestrel.LinkUsage)
		body = v
		rest, err = (*wLinkUsage)(v).UnmarshalMsg(b)
	case kestrel.KindExec:
		v := new(kestrel.ExecAudit)
		body = v
		rest, err = (*wExecAudit)(v).UnmarshalMsg(b)
	case kestrel.KindCheckpoint:
		v := new(kestrel.Checkpoint)
		body = v
		rest, err = (*wCheckpoint)(v).UnmarshalMsg(b)
	default:
		return nil, nil, fmt.Errorf("%w %d", ErrKind, uint8(k))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s body: %w", k, err)
	}
	return body, rest, nil
}

// AppendBody appends the msgp tuple of a record body, exactly as the
// single-record form (AppendRecord) and a batch's others carry it. The
// evidence chain hashes these bytes (docs/evidence.md).
func AppendBody(dst []byte, b kestrel.Body) ([]byte, error) {
	if _, err := bodyKind(b); err != nil {
		return dst, err
	}
	return appendBody(dst, b)
}
