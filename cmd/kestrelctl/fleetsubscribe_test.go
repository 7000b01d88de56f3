package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

func brokerFlags(url string) *fleetconn.Broker {
	return &fleetconn.Broker{URL: url, Fleet: "met"}
}

// fleetSubscribe must tell a failed subscription from a failed connect:
// config push words the first "subscribe: ...", every command prints the
// second as it comes.
func TestFleetSubscribeSaysWhichStepFailed(t *testing.T) {
	ctx := context.Background()
	b := broker.StartMochi(t)

	cl, col, err := fleetSubscribe(ctx, brokerFlags(b.URL()), "test", "kestrel/v1/met/+/state")
	if err != nil {
		t.Fatal(err)
	}
	if err := fleetconn.Wait(ctx, cl.Publish("kestrel/v1/met/bwc-1/state", 1, false, []byte("x")), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	col.settle(ctx, 300*time.Millisecond, 5*time.Second)
	if msgs := col.take(); len(msgs) != 1 || msgs[0].Topic() != "kestrel/v1/met/bwc-1/state" {
		t.Errorf("collected %d messages, want the one published", len(msgs))
	}
	cl.Disconnect(250)

	// A multi-level wildcard before the end: paho refuses the
	// subscription after the connect worked.
	_, _, err = fleetSubscribe(ctx, brokerFlags(b.URL()), "test", "kestrel/#/state")
	var se subscribeError
	if !errors.As(err, &se) {
		t.Fatalf("bad filter: err = %v (%T), want a subscribeError", err, err)
	}
	if err.Error() != se.error.Error() || !errors.Is(err, se.error) {
		t.Errorf("subscribeError reads %q, want its cause %q", err, se.error)
	}

	b.Kill()
	_, _, err = fleetSubscribe(ctx, brokerFlags(b.URL()), "test", "kestrel/v1/met/+/state")
	if err == nil || errors.As(err, new(subscribeError)) || !strings.HasPrefix(err.Error(), "connect "+b.URL()+": ") {
		t.Errorf("no broker: err = %v, want a connect error", err)
	}
}
