// Package fleetsim simulates a fleet for the platform's end-to-end runs:
// each device is a real transport/mqtt session draining an in-memory
// stand-in for its spool (hwtest/broker.Outbox) that a generator fills with
// positions (a random walk at a fixed rate) and now and then an event, so
// the wire batches are the ones the agent sends. It also runs the parts
// around it as real processes: mosquitto with persistence, and the built
// kestrel-platform binary, which the tests kill with SIGKILL.
package fleetsim
