package mqtt_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// The agent's wiring: adapt the spool to Outbox, run the session, route
// inbound topics, publish replies.
func Example() {
	// In the agent: mqtt.LoadTLS(ca, cert, key) and tls:// URLs.
	spool := broker.NewOutbox() // the agent adapts agent/spool instead
	s, err := mqtt.New(mqtt.Options{
		URLs:    []string{"tcp://127.0.0.1:1"}, // nothing listens: the example stays offline
		Fleet:   "met",
		Device:  "bwc-0042",
		Boot:    7,
		Version: "1.0.0",
		State: func() map[string]any {
			return map[string]any{"config_version": uint64(3), "capabilities": []string{"gps", "radio"}}
		},
	}, spool)
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Subscribe(wire.Topic("met", "bwc-0042", "cmd"), func(topic string, payload []byte) {
		// Runs on the session's queue; Publish from here is fine.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Publish(ctx, "reply", []byte("ok"), false)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = s.Run(ctx) // blocks: run it in its own goroutine in the agent
	fmt.Println(err, s.Connected())
	// Output: <nil> false
}
