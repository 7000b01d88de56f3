package fleetconn

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// PasswordEnv holds the MQTT password: never a flag, so that it stays out
// of process listings and shell history.
const PasswordEnv = "KESTREL_MQTT_PASSWORD"

// Broker is how to reach the fleet's broker.
type Broker struct {
	URL            string // tcp://, tls:// (or mqtt://, mqtts://, ssl://)
	CA             string // CA bundle (PEM) for a TLS broker; "" uses the system roots
	Cert, Key      string // client certificate and key (PEM) for mutual TLS
	User           string // MQTT username; the password is read from $KESTREL_MQTT_PASSWORD
	Fleet          string
	AllowPlaintext bool // permit tcp:// to a host that is not loopback
}

// Environment defaults of the flags AddFlags registers: one set for every
// fleet command (tail, config, status, cmd), so a shell exports them once.
const (
	BrokerEnv = "KESTREL_BROKER"
	FleetEnv  = "KESTREL_FLEET"
	CAEnv     = "KESTREL_CA"
	CertEnv   = "KESTREL_CERT"
	KeyEnv    = "KESTREL_KEY"
	UserEnv   = "KESTREL_MQTT_USER"
)

// AddFlags registers the fleet commands' broker flags on fs, each with its
// environment default (BrokerEnv, FleetEnv, CAEnv, CertEnv, KeyEnv,
// UserEnv), and returns the Broker they fill in. --username is another
// spelling of --user (tail's older name).
func AddFlags(fs *flag.FlagSet) *Broker {
	b := &Broker{}
	fs.StringVar(&b.URL, "broker", os.Getenv(BrokerEnv), "broker `URL`: tls://host:8883, or tcp:// to loopback (default $"+BrokerEnv+")")
	fs.StringVar(&b.CA, "ca", os.Getenv(CAEnv), "CA bundle `FILE` (PEM) for a tls:// broker (default $"+CAEnv+")")
	fs.StringVar(&b.Cert, "cert", os.Getenv(CertEnv), "client certificate `FILE` (PEM) for mutual TLS (default $"+CertEnv+")")
	fs.StringVar(&b.Key, "key", os.Getenv(KeyEnv), "client certificate key `FILE` (PEM) (default $"+KeyEnv+")")
	fs.StringVar(&b.User, "user", os.Getenv(UserEnv), "MQTT username (default $"+UserEnv+"); the password comes from $"+PasswordEnv)
	fs.StringVar(&b.User, "username", os.Getenv(UserEnv), "the same as --user")
	fs.StringVar(&b.Fleet, "fleet", os.Getenv(FleetEnv), "fleet id (default $"+FleetEnv+")")
	fs.BoolVar(&b.AllowPlaintext, "allow-plaintext", false, "permit tcp:// to a host that is not loopback")
	return b
}

// Check reports a missing or inconsistent setting, naming the flag.
// needFleet: the command works on one fleet.
func (b *Broker) Check(needFleet bool) error {
	if b.URL == "" {
		return errors.New("--broker is required (tls://host:8883, or tcp:// to loopback)")
	}
	if needFleet && b.Fleet == "" {
		return errors.New("--fleet is required")
	}
	if (b.Cert == "") != (b.Key == "") {
		return errors.New("--cert and --key go together")
	}
	// Like the agent: no plaintext (signed configs, commands, broker
	// credentials) to a host that is not loopback unless asked for.
	if _, err := mqtt.CheckURL(b.URL, b.AllowPlaintext); err != nil {
		return fmt.Errorf("--broker: %w", err)
	}
	return nil
}

// TLSConfig loads the CA and the client certificate. It returns nil when
// neither is given (a tls:// URL then verifies against the system roots).
func (b *Broker) TLSConfig() (*tls.Config, error) {
	switch {
	case b.Cert != "" && b.CA != "":
		return mqtt.LoadTLS(b.CA, b.Cert, b.Key)
	case b.CA == "" && b.Cert == "":
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.CA != "" {
		pem, err := os.ReadFile(b.CA)
		if err != nil {
			return nil, fmt.Errorf("read broker CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA %s: no PEM certificate found", b.CA)
		}
	}
	if b.Cert != "" {
		c, err := tls.LoadX509KeyPair(b.Cert, b.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// ClientOptions are paho's options for a clean MQTT 3.1.1 session as
// role, with a random client id suffix, handlers in arrival order, and no
// automatic reconnect (a caller that wants one sets it).
func (b *Broker) ClientOptions(role string) (*paho.ClientOptions, error) {
	url, err := mqtt.CheckURL(b.URL, b.AllowPlaintext) // in the form paho dials
	if err != nil {
		return nil, fmt.Errorf("--broker: %w", err)
	}
	tc, err := b.TLSConfig()
	if err != nil {
		return nil, err
	}
	po := paho.NewClientOptions().AddBroker(url).
		SetClientID("kestrelctl-" + role + "-" + RandomID(4)).
		SetProtocolVersion(4).SetCleanSession(true).SetOrderMatters(true).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetKeepAlive(30 * time.Second)
	if b.User != "" {
		po.SetUsername(b.User).SetPassword(os.Getenv(PasswordEnv))
	}
	if tc != nil {
		po.SetTLSConfig(tc)
	}
	return po, nil
}

// Connect connects a clean session as role (ClientOptions) and waits for
// the CONNACK.
func (b *Broker) Connect(ctx context.Context, role string) (paho.Client, error) {
	po, err := b.ClientOptions(role)
	if err != nil {
		return nil, err
	}
	cl := paho.NewClient(po)
	if err := Wait(ctx, cl.Connect(), 15*time.Second); err != nil {
		return nil, fmt.Errorf("connect %s: %w", b.URL, err)
	}
	return cl, nil
}

// Wait waits for a paho token, at most d or until ctx ends.
func Wait(ctx context.Context, tok paho.Token, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return errors.New("timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RandomID is n random bytes in hex: client ids and request ids.
func RandomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
