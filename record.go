// Package kestrel is the record model that every layer of the agent shares.
//
// It is the leaf of the import graph: it imports nothing internal, so that
// drivers, transports, firmware hooks and the agent can all speak in records
// without importing one another (see DESIGN.md, "Data path").
//
// A driver builds a Record with Time and Body set. The agent stamps the rest
// of the Envelope (device, boot, seq, priority) before the record reaches the
// spool, and the transport encodes it for the wire.
//
// Units are fixed-point integers chosen at the resolution that DESIGN.md
// calls lossless: 1e-7 degrees for latitude and longitude, centimetres for
// altitude, cm/s for speed and centidegrees for track. Floating point never
// enters the record, so a value survives encode and decode bit for bit.
package kestrel

import "fmt"

// Priority decides the spool lane and the order of sending. Higher values are
// more urgent; the zero value is Bulk.
type Priority uint8

const (
	PriorityBulk      Priority = 0 // evicted first when the spool is full
	PriorityNormal    Priority = 1 // routine telemetry (positions, status)
	PriorityHigh      Priority = 2 // sent at once, ahead of any backlog
	PriorityEmergency Priority = 3 // sent first, synced at once, never evicted
)

// NumPriorities is the number of priority lanes.
const NumPriorities = 4

var priorityNames = [NumPriorities]string{"bulk", "normal", "high", "emergency"}

func (p Priority) String() string {
	if int(p) < len(priorityNames) {
		return priorityNames[p]
	}
	return fmt.Sprintf("priority(%d)", uint8(p))
}

// ParsePriority is the inverse of Priority.String.
func ParsePriority(s string) (Priority, error) {
	for i, n := range priorityNames {
		if n == s {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("unknown priority %q (want bulk, normal, high or emergency)", s)
}

// Envelope is what every record carries.
type Envelope struct {
	// Device is the device id, unique within the fleet.
	Device string
	// Boot identifies one run of the agent. It grows by one on every start
	// and is persisted beside the sequence high-water mark.
	Boot uint32
	// Seq never repeats for a device, across restarts included.
	Seq uint64
	// Time is when the observation was made, in milliseconds since the Unix
	// epoch, UTC: the receiver's fix time for positions, the agent's clock
	// (or the edge timestamp from the kernel) otherwise.
	Time int64
	// Priority selects the spool lane.
	Priority Priority
}

// Record is one observation stamped by the agent.
type Record struct {
	Envelope
	// Body is one of the record kinds below, by pointer.
	Body Body
}

// Kind returns the kind of the record's body, or KindUnknown when it has none.
func (r *Record) Kind() Kind {
	if r.Body == nil {
		return KindUnknown
	}
	return r.Body.Kind()
}

// Body is the payload of a record.
type Body interface {
	Kind() Kind
}

// Kind names the type of a record's body. The values are part of the wire
// format: never renumber them.
type Kind uint8

const (
	KindUnknown    Kind = 0
	KindPosition   Kind = 1  // *Position
	KindGPSStatus  Kind = 2  // *GPSStatus
	KindRadio      Kind = 3  // *RadioStatus
	KindAccel      Kind = 4  // *Accel
	KindBattery    Kind = 5  // *Battery
	KindThermal    Kind = 6  // *Thermal
	KindEvent      Kind = 7  // *Event
	KindLink       Kind = 8  // *LinkUsage
	KindExec       Kind = 9  // *ExecAudit
	KindCheckpoint Kind = 10 // *Checkpoint
)

var kindNames = map[Kind]string{
	KindUnknown:    "unknown",
	KindPosition:   "position",
	KindGPSStatus:  "gps",
	KindRadio:      "radio",
	KindAccel:      "accel",
	KindBattery:    "battery",
	KindThermal:    "thermal",
	KindEvent:      "event",
	KindLink:       "link",
	KindExec:       "exec",
	KindCheckpoint: "checkpoint",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// PosFlags says which optional fields of a Position hold a value.
type PosFlags uint16

const (
	HasAlt   PosFlags = 1 << iota // Alt is set (from GGA or GNS)
	HasSpeed                      // Speed is set (from RMC or VTG)
	HasTrack                      // Track is set (from RMC or VTG)
	HasSats                       // Sats is set
	HasHDOP                       // HDOP is set
	HasEPH                        // EPH is set (from GST)
	HasEPV                        // EPV is set (from GST)
)

// FixMode is the NMEA fix dimension, as gpsd reports it.
type FixMode uint8

const (
	FixNone FixMode = 1
	Fix2D   FixMode = 2
	Fix3D   FixMode = 3
)

// Position is one GPS fix: one receiver cycle merged from its sentences.
// The record's Envelope.Time is the fix time.
type Position struct {
	Lat int32 // latitude, 1e-7 degrees, north positive
	Lon int32 // longitude, 1e-7 degrees, east positive
	// Alt is the altitude above mean sea level (the geoid), in centimetres.
	Alt int32
	// Speed over ground in cm/s (0.01 m/s).
	Speed int32
	// Track is the course over ground, degrees true, in centidegrees
	// (0 to 35999).
	Track uint16
	Mode  FixMode // Fix2D or Fix3D
	Sats  uint8   // satellites used in the fix
	HDOP  uint16  // horizontal dilution of precision, hundredths
	// EPH and EPV are 1-sigma horizontal and vertical error estimates in
	// centimetres, from GST where the receiver sends it.
	EPH uint32
	EPV uint32
	// Coarsened is the grid, in metres, that privacy policy reduced this
	// position to on purpose; 0 means full precision.
	Coarsened uint32
	Flags     PosFlags
}

func (*Position) Kind() Kind { return KindPosition }

// GPSState is the receiver's state as the watchdog sees it.
type GPSState uint8

const (
	GPSNoData GPSState = 0 // no valid sentence within the watchdog interval
	GPSNoFix  GPSState = 1 // sentences flow but there is no fix
	GPSFix    GPSState = 2 // a 2D or 3D fix
)

var gpsStateNames = [...]string{"no_data", "no_fix", "fix"}

func (s GPSState) String() string {
	if int(s) < len(gpsStateNames) {
		return gpsStateNames[s]
	}
	return fmt.Sprintf("gpsstate(%d)", uint8(s))
}

// GPSStatus reports the receiver's health: sent on change and as a heartbeat.
type GPSStatus struct {
	State      GPSState
	Mode       FixMode
	SatsInView uint8
	SatsUsed   uint8
	PDOP       uint16 // hundredths; 0 when unknown
	HDOP       uint16 // hundredths; 0 when unknown
	VDOP       uint16 // hundredths; 0 when unknown
	// Counters since the driver started: sentences with a valid checksum,
	// sentences rejected (checksum, framing, over-long), bytes of noise.
	Sentences  uint64
	BadFrames  uint64
	NoiseBytes uint64
}

func (*GPSStatus) Kind() Kind { return KindGPSStatus }

// RadioProfile names the AT command set of a radio or modem.
type RadioProfile uint8

const (
	ProfileTETRA RadioProfile = 1 // TETRA PEI, ETSI EN 300 392-5
	ProfileLTE   RadioProfile = 2 // 3GPP TS 27.007
)

func (p RadioProfile) String() string {
	switch p {
	case ProfileTETRA:
		return "tetra"
	case ProfileLTE:
		return "lte"
	}
	return fmt.Sprintf("profile(%d)", uint8(p))
}

// RegState is the network registration status exactly as the radio
// reported it: the <stat> of 3GPP TS 27.007 +CREG/+CGREG/+CEREG/+C5GREG
// (clause 7.2 and 10.1.x, values 0-11 as of Release 18), or the <reg
// stat> of EN 300 392-5 +CREG (0-5, the same meanings). A value the
// standard does not (yet) define is kept as the radio sent it, so 12 and
// above, or a vendor's own code, arrive unchanged.
type RegState uint8

const (
	RegNotRegistered           RegState = 0  // not registered, not searching
	RegHome                    RegState = 1  // registered, home network
	RegSearching               RegState = 2  // not registered, searching
	RegDenied                  RegState = 3  // registration denied
	RegUnknown                 RegState = 4  // unknown (e.g. out of coverage)
	RegRoaming                 RegState = 5  // registered, roaming
	RegSMSOnlyHome             RegState = 6  // registered for "SMS only", home
	RegSMSOnlyRoaming          RegState = 7  // registered for "SMS only", roaming
	RegEmergencyOnly           RegState = 8  // attached for emergency bearer services only
	RegCSFBNotPreferredHome    RegState = 9  // registered for "CSFB not preferred", home
	RegCSFBNotPreferredRoaming RegState = 10 // registered for "CSFB not preferred", roaming
	RegRLOS                    RegState = 11 // attached for access to RLOS
)

var regStateNames = [...]string{
	"not_registered", "home", "searching", "denied", "unknown", "roaming",
	"sms_only_home", "sms_only_roaming", "emergency_only",
	"csfb_not_preferred_home", "csfb_not_preferred_roaming", "rlos",
}

// String names the state ("emergency_only"); a value outside the table
// prints as "stat_N".
func (r RegState) String() string {
	if int(r) < len(regStateNames) {
		return regStateNames[r]
	}
	return fmt.Sprintf("stat_%d", uint8(r))
}

// InService reports a registration that carries ordinary traffic: home
// or roaming, including "SMS only" and "CSFB not preferred".
func (r RegState) InService() bool {
	switch r {
	case RegHome, RegRoaming, RegSMSOnlyHome, RegSMSOnlyRoaming, RegCSFBNotPreferredHome, RegCSFBNotPreferredRoaming:
		return true
	}
	return false
}

// RegSource says which registration report RadioStatus.Registered, TAC,
// CellID and AccessTech come from. It tells a location area (+CREG,
// +CGREG) from a tracking area (+CEREG, +C5GREG).
type RegSource uint8

const (
	RegSourceNone   RegSource = 0
	RegSourceCREG   RegSource = 1 // +CREG: circuit-switched (27.007 7.2) or TETRA (EN 300 392-5)
	RegSourceCGREG  RegSource = 2 // +CGREG: GPRS packet domain (27.007 10.1.20)
	RegSourceCEREG  RegSource = 3 // +CEREG: EPS (27.007 10.1.22)
	RegSourceC5GREG RegSource = 4 // +C5GREG: 5GS (27.007, Release 15 on)
)

var regSourceNames = [...]string{"", "creg", "cgreg", "cereg", "c5greg"}

func (r RegSource) String() string {
	if int(r) < len(regSourceNames) {
		return regSourceNames[r]
	}
	return fmt.Sprintf("source(%d)", uint8(r))
}

// OperatorFormat is the <format> of +COPS (27.007 7.3): what kind of
// name RadioStatus.Operator holds.
type OperatorFormat uint8

const (
	OperatorLong    OperatorFormat = 0 // long alphanumeric ("Vodafone UK")
	OperatorShort   OperatorFormat = 1 // short alphanumeric ("voda UK")
	OperatorNumeric OperatorFormat = 2 // numeric MCC and MNC ("23415"); TETRA: the MNI
)

var operatorFormatNames = [...]string{"long", "short", "numeric"}

func (f OperatorFormat) String() string {
	if int(f) < len(operatorFormatNames) {
		return operatorFormatNames[f]
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// AccessTechUnknown is RadioStatus.AccessTech when no report carried an
// <AcT> (0 is GSM in 27.007's table, so it cannot mean "unknown").
const AccessTechUnknown uint8 = 255

// TETRAMode is the operating mode of a TETRA radio (AT+CTOM).
type TETRAMode uint8

const (
	ModeUnknown TETRAMode = 0
	ModeTMO     TETRAMode = 1 // trunked mode, through the network
	ModeDMO     TETRAMode = 2 // direct mode, radio to radio
)

// RadioStatus is the state of a TETRA radio or LTE modem.
// Signal fields are 0 when unknown (real values are negative dBm).
// New fields go at the end: the wire carries them in this order.
type RadioStatus struct {
	Profile    RadioProfile
	Registered RegState // the <stat> as reported (see RegState), from RegSource
	Online     bool     // the radio answers AT commands
	RSSI       int16    // dBm, from +CSQ
	BER        uint8    // +CSQ bit error rate class, 0-7; 99 unknown
	RSRP       int16    // dBm, LTE, from +CESQ
	RSRQ       int16    // tenths of a dB, LTE, from +CESQ
	// TETRA
	Mode      TETRAMode
	Identity  string // own ITSI/ISSI (AT+CNUMF)
	Talkgroup string // selected group (GSSI, AT+CTGS)
	// LTE
	Operator   string // AT+COPS <oper>, in OperatorFormat; TETRA: MNI
	AccessTech uint8  // 27.007 <AcT> (7 E-UTRAN, 11 NR...); AccessTechUnknown when not reported
	TAC        uint32 // location area (+CREG/+CGREG, TETRA LA) or tracking area code
	CellID     uint64 // cell identity; NR cell identities are 36 bits
	IMEI       string
	ICCID      string // normalised: filler F removed, nibble-swapped form put right
	// Appended after the first release of the radio body.
	OperatorFormat OperatorFormat // +COPS <format> of Operator
	ICCIDInvalid   bool           // ICCID fails ITU-T E.118 (length 19-20, MII 89, decimal, Luhn); kept as read
	RegSource      RegSource      // which report Registered, TAC, CellID, AccessTech come from
	RejectedLines  uint64         // modem lines refused since the driver started: no known layout, or a value out of range
}

func (*RadioStatus) Kind() Kind { return KindRadio }

// Accel is one accelerometer sample (Linux IIO, raw times scale).
type Accel struct {
	X, Y, Z int32 // mm/s² (milli-m/s²)
}

func (*Accel) Kind() Kind { return KindAccel }

// Battery is a power_supply reading.
type Battery struct {
	Capacity  uint8  // percent, 0-100
	Status    string // Charging, Discharging, Full, Not charging, Unknown
	VoltageMV int32  // millivolts; 0 when unknown
	TempDeciC int16  // tenths of a degree Celsius; 0 when unknown
	HasTemp   bool
}

func (*Battery) Kind() Kind { return KindBattery }

// Thermal is a thermal zone reading.
type Thermal struct {
	Zone   string // sysfs zone name or its type, e.g. "cpu-thermal"
	MilliC int32  // millidegrees Celsius
}

func (*Thermal) Kind() Kind { return KindThermal }

// EventType names an event. The values are part of the wire format.
type EventType uint16

const (
	EventUnknown         EventType = 0
	EventEmergency       EventType = 1  // emergency button or radio emergency
	EventRecordingStart  EventType = 2  // camera started recording
	EventRecordingStop   EventType = 3  // camera stopped recording
	EventDocked          EventType = 4  // camera docked
	EventUndocked        EventType = 5  // camera undocked
	EventTamper          EventType = 6  // tamper switch or case opened
	EventBatteryCritical EventType = 7  // firmware says battery critical
	EventHolster         EventType = 8  // holster sensor triggered
	EventTaser           EventType = 9  // taser/CED armed or fired
	EventInput           EventType = 10 // vehicle input line changed; Name is the line, Value the level
	EventStatusMessage   EventType = 11 // TETRA status message (+CTSDSR); Value is the status code
	EventSDS             EventType = 12 // TETRA short data; Text carries the text
	EventSecurity        EventType = 13 // security finding; Text says what
	EventGPSState        EventType = 14 // GPS state changed; Text is the new state
	EventRadioReset      EventType = 15 // modem rebooted or went silent and was re-initialised
	EventStorage         EventType = 16 // spool storage state changed (full, read-only, ok)
	EventLocate          EventType = 17 // a locate-now command was answered
	EventHarshDriving    EventType = 18 // harsh braking, acceleration or cornering; Name says which, Value the peak in mm/s²
	EventPrivacy         EventType = 19 // the privacy in force changed, or a privacy command ran; Name the cause, Value 0 off, 1 coarse, 2 pause, 3 lifted by an own emergency; Text names no place
)

var eventNames = map[EventType]string{
	EventUnknown:         "unknown",
	EventEmergency:       "emergency",
	EventRecordingStart:  "recording_start",
	EventRecordingStop:   "recording_stop",
	EventDocked:          "docked",
	EventUndocked:        "undocked",
	EventTamper:          "tamper",
	EventBatteryCritical: "battery_critical",
	EventHolster:         "holster",
	EventTaser:           "taser",
	EventInput:           "input",
	EventStatusMessage:   "status_message",
	EventSDS:             "sds",
	EventSecurity:        "security",
	EventGPSState:        "gps_state",
	EventRadioReset:      "radio_reset",
	EventStorage:         "storage",
	EventLocate:          "locate",
	EventHarshDriving:    "harsh_driving",
	EventPrivacy:         "privacy",
}

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("event(%d)", uint16(t))
}

// ParseEventType is the inverse of EventType.String.
func ParseEventType(s string) (EventType, error) {
	for t, n := range eventNames {
		if n == s && t != EventUnknown {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown event type %q", s)
}

// Event is something that happened at an instant.
type Event struct {
	Type   EventType
	Source string // who saw it: "gpio", "firmware", "radio", "ebpf", "agent"
	Name   string // the input line, the firmware client, the peer's ISSI...
	Value  int64  // input level, status code, ...
	Text   string // free text: SDS body, detail
}

func (*Event) Kind() Kind { return KindEvent }

// LinkUsage is traffic on one network interface over an interval.
type LinkUsage struct {
	Iface      string
	Source     string // "ebpf" or "procfs"
	IntervalMS uint32 // the interval the counts cover
	RxBytes    uint64
	TxBytes    uint64
	RxPackets  uint64
	TxPackets  uint64
	Drops      uint64
}

func (*LinkUsage) Kind() Kind { return KindLink }

// ExecAudit records a program executed on the device.
type ExecAudit struct {
	Path       string // the executed file
	PID        uint32
	PPID       uint32
	UID        uint32
	ParentComm string // the parent's command name
	Allowed    bool   // the path is on the configured allow-list
}

func (*ExecAudit) Kind() Kind { return KindExec }

// CheckpointReason says why the device signed a checkpoint.
type CheckpointReason uint8

const (
	CheckpointInterval  CheckpointReason = 1 // evidence.checkpoint_interval elapsed
	CheckpointRecords   CheckpointReason = 2 // evidence.checkpoint_records were chained
	CheckpointEmergency CheckpointReason = 3 // right after an emergency record
	CheckpointBoot      CheckpointReason = 4 // first record of a boot: names the head it continues from
	CheckpointShutdown  CheckpointReason = 5 // the agent is stopping
)

var checkpointReasonNames = [...]string{"", "interval", "records", "emergency", "boot", "shutdown"}

func (r CheckpointReason) String() string {
	if r > 0 && int(r) < len(checkpointReasonNames) {
		return checkpointReasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Checkpoint is the device's signed statement about its hash chain
// (docs/evidence.md): the records with seq in (FromSeq, LastSeq] of this
// device, Count of them, chain from the digest of record FromSeq to Head,
// the digest of record LastSeq. Sig is the Ed25519 signature of the device
// key over the checkpoint (evidence.SignedMessage). A boot checkpoint has
// FromSeq = LastSeq, Count 0: Head is the persisted head the new boot's
// chain continues from.
type Checkpoint struct {
	Reason  CheckpointReason
	FromSeq uint64
	LastSeq uint64
	Count   uint64
	Head    []byte // 32 bytes, SHA-256
	Sig     []byte // 64 bytes, Ed25519
}

func (*Checkpoint) Kind() Kind { return KindCheckpoint }

// Compile-time checks that every body implements Body.
var (
	_ Body = (*Position)(nil)
	_ Body = (*GPSStatus)(nil)
	_ Body = (*RadioStatus)(nil)
	_ Body = (*Accel)(nil)
	_ Body = (*Battery)(nil)
	_ Body = (*Thermal)(nil)
	_ Body = (*Event)(nil)
	_ Body = (*LinkUsage)(nil)
	_ Body = (*ExecAudit)(nil)
	_ Body = (*Checkpoint)(nil)
)
