package fleetconn

import (
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/kestrel-edge/kestrel/hwtest/broker"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		b    Broker
		want string // "" = ok
	}{
		{Broker{URL: "tcp://127.0.0.1:1883", Fleet: "met"}, ""},
		{Broker{URL: "tls://mqtt.example:8883", Fleet: "met"}, ""},
		{Broker{URL: "tcp://198.18.0.1:1883", Fleet: "met"}, "plaintext"},
		{Broker{URL: "tcp://198.18.0.1:1883", Fleet: "met", AllowPlaintext: true}, ""},
		{Broker{Fleet: "met"}, "--broker is required"},
		{Broker{URL: "tcp://127.0.0.1:1883"}, "--fleet is required"},
		{Broker{URL: "tls://mqtt.example:8883", Fleet: "met", Cert: "c.pem"}, "--cert and --key go together"},
	} {
		err := tc.b.Check(true)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.b, err, tc.want)
		}
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	t.Setenv("KESTREL_BROKER", "tls://mqtt.example:8883")
	t.Setenv("KESTREL_FLEET", "met")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	b := AddFlags(fs)
	if err := fs.Parse([]string{"--user", "ops", "--allow-plaintext"}); err != nil {
		t.Fatal(err)
	}
	if b.URL != "tls://mqtt.example:8883" || b.Fleet != "met" || b.User != "ops" || !b.AllowPlaintext {
		t.Fatalf("%+v", b)
	}
}

// TestConnectMutualTLS: with the CA and a client certificate the helper
// reaches a broker that requires both; without the certificate it does not.
func TestConnectMutualTLS(t *testing.T) {
	ca := broker.NewCA(t)
	brk := broker.StartMochi(t, broker.WithTLS(ca))
	cert, key := ca.IssueClient(t, "ops")
	b := &Broker{URL: brk.URL(), Fleet: "met", CA: ca.CAFile, Cert: cert, Key: key}
	cl, err := b.Connect(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	cl.Disconnect(0)
	b.Cert, b.Key = "", ""
	if cl, err := b.Connect(context.Background(), "test"); err == nil {
		cl.Disconnect(0)
		t.Fatal("connected to a mutual-TLS broker without a client certificate")
	}
}
