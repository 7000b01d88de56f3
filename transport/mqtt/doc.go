// Package mqtt is the agent's MQTT session: it drains the spool to a broker
// over paho.mqtt.golang and carries configuration, commands and replies.
//
// Standards: MQTT Version 3.1.1 (OASIS Standard, 29 October 2014), QoS 1
// throughout; the birth/death scheme follows Eclipse Sparkplug 3.0
// (section 5, "bdSeq": the NDEATH Last Will and the NBIRTH carry the same
// session number, so a platform can tell a stale will from a live session).
// Topics are those of docs/topics.md, built by transport/wire.
//
// paho.mqtt.golang has traps that this package steps around on purpose:
//   - token.Wait() can hang through an outage: every wait here is bounded
//     (WaitTimeout, or a select on Token.Done() with a timer or context).
//   - paho's first Connect is not retried and its auto-reconnect has no
//     jitter: the session runs its own connect loop over all broker URLs,
//     with exponential backoff and full jitter (AWS Architecture Blog,
//     "Exponential Backoff And Jitter", 2015), so a fleet does not stampede
//     a restarted broker. A fresh paho client is built for every connection,
//     which also lets each connection carry its own Last Will.
//   - message handlers that block deadlock paho's router, and paho acks a
//     message as soon as its handler returns: inbound messages are copied
//     onto a bounded queue (256) served by the session's own goroutine, and
//     with paho's automatic ack off the PUBACK goes after the message's
//     handler has run. A broker with an in-flight window (mosquitto's
//     max_inflight_messages, 20 by default) then holds further messages
//     itself. One that sends more than the queue holds is held back by TCP:
//     paho's reader waits for room. While it waits, PUBACKs for the
//     session's own messages wait too, so a handler that publishes (a
//     command reply) can wait up to AckTimeout; nothing is lost
//     (TestInboundBurstLosesNothing).
//   - paho's store is not durable: a memory store is used and the spool
//     (the Outbox) is the durable store. A record leaves the Outbox only
//     when the PUBACK for the message that carried it arrives; records in
//     flight when a connection drops are released back to the Outbox and
//     sent again, so duplicates are bounded by the in-flight window.
//
// # Birth and death
//
// On every connection the session publishes, retained on the state
// channel, a msgpack map: online (true), boot, bdseq, version, time (ms
// UTC), plaintext (only when a non-loopback plaintext URL is in use), and
// whatever Options.State returns (config_version, capabilities, spool,
// health...; it cannot override those keys). The connection's Last Will,
// also retained on state, is the same map with online=false and no extra
// fields. A clean shutdown publishes that offline map itself before the
// DISCONNECT, which would otherwise discard the will.
//
// bdseq counts connection attempts of one Session, from 1, in memory
// (failed attempts use a number too, so births may skip some). It is not
// persisted: boot grows on every agent start, so (boot, bdseq) names a
// connection uniquely, and a platform that sees a will whose (boot, bdseq)
// is older than the last birth knows it is stale and ignores it.
//
// # Sending
//
// Records taken from the Outbox are split by lane: emergency (at once) and
// high (within HighAge) go on events, normal and bulk are batched on
// telemetry (a batch closes at BatchMax records, about BatchBytes, or when
// one of its records has waited its priority's age: BatchAge, BulkAge).
// The ages, keepalive and ping timeout come from the link profile
// (profile.go: lte or narrowband). A backlog never waits on an age: the
// partial batch at the end of a drain goes at once. Up to InFlight telemetry messages are unacknowledged
// at a time; events bypass the window. Each PUBACK commits its message's
// records (PUBACKs return in order, MQTT 3.1.1 section 4.6). When the
// connection drops, every record taken and not acknowledged is released.
//
// Inbound subscriptions use a clean session: a command sent while the
// device is offline is not queued by the broker (configuration is
// retained, so it is not lost).
package mqtt
