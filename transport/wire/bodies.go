package wire

import kestrel "github.com/kestrel-edge/kestrel"

// The record kinds other than positions travel as msgp tuples (arrays of
// the fields in declaration order). The wire structs below mirror the
// kestrel bodies field for field, so a body converts to its wire form by a
// pointer conversion, without copying: a field added to a kestrel body
// breaks that conversion at compile time until it is added here too
// (at the end, so older decoders still read the tuple; vartuple lets a
// decoder accept tuples with fewer or more fields than it knows).

//go:generate go tool msgp -file bodies.go -o bodies_gen.go -io=false -tests=false -unexported

//msgp:vartuple wGPSStatus wRadioStatus wAccel wBattery wThermal wEvent wLinkUsage wExecAudit wPosition wCheckpoint
//msgp:replace kestrel.GPSState with:uint8
//msgp:replace kestrel.FixMode with:uint8
//msgp:replace kestrel.RadioProfile with:uint8
//msgp:replace kestrel.RegState with:uint8
//msgp:replace kestrel.RegSource with:uint8
//msgp:replace kestrel.OperatorFormat with:uint8
//msgp:replace kestrel.TETRAMode with:uint8
//msgp:replace kestrel.EventType with:uint16
//msgp:replace kestrel.PosFlags with:uint16
//msgp:replace kestrel.CheckpointReason with:uint8

// wPosition is the tuple form of a position, used by AppendRecord (the
// spool's single-record form); batches carry positions in columns instead.
type wPosition struct {
	Lat       int32
	Lon       int32
	Alt       int32
	Speed     int32
	Track     uint16
	Mode      kestrel.FixMode
	Sats      uint8
	HDOP      uint16
	EPH       uint32
	EPV       uint32
	Coarsened uint32
	Flags     kestrel.PosFlags
}

type wGPSStatus struct {
	State      kestrel.GPSState
	Mode       kestrel.FixMode
	SatsInView uint8
	SatsUsed   uint8
	PDOP       uint16
	HDOP       uint16
	VDOP       uint16
	Sentences  uint64
	BadFrames  uint64
	NoiseBytes uint64
}

type wRadioStatus struct {
	Profile    kestrel.RadioProfile
	Registered kestrel.RegState
	Online     bool
	RSSI       int16
	BER        uint8
	RSRP       int16
	RSRQ       int16
	Mode       kestrel.TETRAMode
	Identity   string
	Talkgroup  string
	Operator   string
	AccessTech uint8
	TAC        uint32
	CellID     uint64
	IMEI       string
	ICCID      string
	// Appended (older decoders skip them; older records decode them as 0).
	OperatorFormat kestrel.OperatorFormat
	ICCIDInvalid   bool
	RegSource      kestrel.RegSource
	RejectedLines  uint64
}

type wAccel struct {
	X, Y, Z int32
}

type wBattery struct {
	Capacity  uint8
	Status    string
	VoltageMV int32
	TempDeciC int16
	HasTemp   bool
}

type wThermal struct {
	Zone   string
	MilliC int32
}

type wEvent struct {
	Type   kestrel.EventType
	Source string
	Name   string
	Value  int64
	Text   string
}

type wLinkUsage struct {
	Iface      string
	Source     string
	IntervalMS uint32
	RxBytes    uint64
	TxBytes    uint64
	RxPackets  uint64
	TxPackets  uint64
	Drops      uint64
}

type wExecAudit struct {
	Path       string
	PID        uint32
	PPID       uint32
	UID        uint32
	ParentComm string
	Allowed    bool
}

type wCheckpoint struct {
	Reason  kestrel.CheckpointReason
	FromSeq uint64
	LastSeq uint64
	Count   uint64
	Head    []byte
	Sig     []byte
}

// Compile-time proof that each wire struct mirrors its body exactly.
var (
	_ = (*wPosition)((*kestrel.Position)(nil))
	_ = (*wGPSStatus)((*kestrel.GPSStatus)(nil))
	_ = (*wRadioStatus)((*kestrel.RadioStatus)(nil))
	_ = (*wAccel)((*kestrel.Accel)(nil))
	_ = (*wBattery)((*kestrel.Battery)(nil))
	_ = (*wThermal)((*kestrel.Thermal)(nil))
	_ = (*wEvent)((*kestrel.Event)(nil))
	_ = (*wLinkUsage)((*kestrel.LinkUsage)(nil))
	_ = (*wExecAudit)((*kestrel.ExecAudit)(nil))
	_ = (*wCheckpoint)((*kestrel.Checkpoint)(nil))
)
