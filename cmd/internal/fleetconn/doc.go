// Package fleetconn is kestrelctl's connection to the fleet's MQTT broker
// (MQTT 3.1.1 over TCP or TLS), shared by every command that talks to it:
// the broker flags and their environment defaults, the plaintext rule
// (no tcp:// to a host that is not loopback unless asked for, like the
// agent), TLS and mutual-TLS loading, and a clean-session paho connect.
package fleetconn
