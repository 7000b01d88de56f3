package fleet

// Topics (docs/topics.md): everything lives under kestrel/v1/{fleet}/; a
// device's own channels under kestrel/v1/{fleet}/{device}/, the fleet-wide
// and group desired configs under _all/ and _group/NAME/ (a leading "_"
// is not a valid device id, so they cannot collide).
const (
	ChannelDesired  = "config/desired"  // retained, manager → device: a ConfigEnvelope
	ChannelReported = "config/reported" // retained, device → manager: a Report
	ChannelCmd      = "cmd"             // manager → device: a Command
	ChannelAudit    = "audit"           // device → manager: AuditEntry
	ChannelState    = "state"           // retained, device → manager: its state message
	ChannelReply    = "reply"           // device → manager: Reply (or reply/NAME)
)

// Prefix is the topic prefix of a fleet, "kestrel/v1/{fleet}/".
func Prefix(fleet string) string { return "kestrel/v1/" + fleet + "/" }

// DeviceTopic is a device's channel, "kestrel/v1/{fleet}/{device}/{channel}";
// device may be the wildcard "+".
func DeviceTopic(fleet, device, channel string) string {
	return Prefix(fleet) + device + "/" + channel
}
