// Package linkbudget measures what the whole agent costs on the link: the
// real kestrel binary, a GPS receiver replaying a real 1 Hz track over a
// pseudo-terminal in real time, the AT modem simulator and a fake sysfs
// battery, mosquitto, and between agent and broker a counting TCP proxy
// that sorts every byte of the MQTT 3.1.1 stream (OASIS MQTT 3.1.1,
// section 2: fixed header and remaining length; 3.3: PUBLISH topic and
// packet identifier) by channel in both directions. With TLS on it counts
// the TLS records instead (RFC 8446, section 5: 5-byte record header).
//
//	make linkbudget   (KESTREL_AGENT_LINKBUDGET=1, 10 minutes per profile)
//
// Only tests import it.
package linkbudget
