package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tinylib/msgp/msgp"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

// TestStateSaysMutualTLS: the retained state message says "mtls": true
// when the device reaches the broker over TLS with its client certificate,
// and false when broker.require_client_cert = false let it connect
// without one, so that a fleet manager sees every waived device.
func TestStateSaysMutualTLS(t *testing.T) {
	ca := broker.NewCA(t)
	for _, tc := range []struct {
		name     string
		mutual   bool
		wantMTLS bool
	}{
		{"client certificate", true, true},
		{"waived", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b *broker.Broker
			if tc.mutual {
				b = broker.StartMochi(t, broker.WithTLS(ca))
			} else {
				b = broker.StartMochi(t)
			}
			obs := b.Observe("kestrel/v1/test/car-17/state")
			dir := t.TempDir()
			c := config.Defaults()
			c.Device.ID, c.Device.Fleet = "car-17", "test"
			c.Broker.URLs = []string{b.URL()}
			if tc.mutual {
				c.Broker.CAFile = ca.CAFile
				c.Broker.CertFile, c.Broker.KeyFile = ca.IssueClient(t, "car-17")
			} else {
				c.Broker.RequireClientCert = false
			}
			c.Spool.Dir = filepath.Join(dir, "spool")
			c.Remote.StateFile = filepath.Join(dir, "remote.json")
			c.Sensors.SysfsRoot = filepath.Join(dir, "sys")
			c.GPIO.DevRoot = filepath.Join(dir, "dev")
			c.Hooks.Socket = ""
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			a, err := New(c, Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() {
				cancel()
				<-done
				a.Close()
			}()
			var got any
			ok := obs.Wait(20*time.Second, func(ms []broker.Message) bool {
				for _, m := range ms {
					v, _, err := msgp.ReadIntfBytes(m.Payload)
					if st, isMap := v.(map[string]any); err == nil && isMap && st["online"] == true {
						if mt, has := st["mtls"]; has {
							got = mt
							return true
						}
					}
				}
				return false
			})
			if !ok {
				t.Fatal("no online state message with an mtls field")
			}
			if got != tc.wantMTLS {
				t.Fatalf("state message mtls = %v, want %v", got, tc.wantMTLS)
			}
		})
	}
}
