package selftest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// checkBrokers checks each broker URL: name lookup, TCP connect, TLS
// handshake and MQTT CONNECT with the configured credentials, each step
// with its own verdict. A failover broker that fails while another works
// is a warning, not a failure: the device still reports.
func checkBrokers(ctx context.Context, cfg config.Config, o *Options) []Result {
	b := cfg.Broker
	if len(b.URLs) == 0 {
		return []Result{fail("no broker configured (broker.urls is empty)", "set broker.urls")}
	}
	// Credentials and TLS material are the same for every URL.
	var password string
	var notes []string
	if b.PasswordFile != "" {
		pw, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			return []Result{fail(fmt.Sprintf("broker.password_file: %v", errors.Unwrap(err)), "check the path and that the agent's user can read it")}
		}
		password = strings.TrimRight(string(pw), "\r\n")
		if n := looseMode(b.PasswordFile); n != "" {
			notes = append(notes, "broker.password_file is "+n)
		}
	}
	var tlsCfg *tls.Config
	if b.CAFile != "" || b.CertFile != "" || b.KeyFile != "" {
		c, err := mqtt.LoadTLS(b.CAFile, b.CertFile, b.KeyFile)
		if err != nil {
			return []Result{fail(fmt.Sprintf("broker TLS files: %v", err), "broker.ca_file, cert_file and key_file must all be set, readable PEM files, the key matching the certificate")}
		}
		tlsCfg = c
		if n := looseMode(b.KeyFile); n != "" {
			notes = append(notes, "broker.key_file is "+n)
		}
		if r, bad := clientCertDates(tlsCfg, o.Now()); bad {
			return []Result{r}
		} else if r.Detail != "" {
			notes = append(notes, r.Detail)
		}
	}
	clientID := "kestrel-" + cfg.Device.Fleet + "-" + cfg.Device.ID + "-selftest"

	// Side by side, so that several unreachable brokers cost one timeout.
	out := make([]Result, len(b.URLs))
	var wg sync.WaitGroup
	for i, raw := range b.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = checkBroker(ctx, raw, b, tlsCfg, password, clientID, o)
		}()
	}
	wg.Wait()
	anyPass := false
	for i := range out {
		r := &out[i]
		if len(b.URLs) > 1 {
			r.Part = "broker " + mqtt.RedactURL(b.URLs[i])
		}
		if r.Status == Pass && len(notes) > 0 {
			r.Status = Warn
			r.Detail += "; " + strings.Join(notes, "; ")
			r.Hint = "chmod 600 the key and password files; renew the client certificate before it expires"
		}
		if r.Status == Pass || r.Status == Warn {
			anyPass = true
		}
	}
	if anyPass {
		for i := range out {
			if out[i].Status == Fail {
				out[i].Status = Warn
				out[i].Detail = "failover broker: " + out[i].Detail
			}
		}
	}
	return out
}

func checkBroker(ctx context.Context, raw string, b config.Broker, tlsCfg *tls.Config, password, clientID string, o *Options) Result {
	norm, err := mqtt.CheckURL(raw, b.AllowPlaintext)
	if err != nil {
		return fail(err.Error(), "fix broker.urls: tls://host:8883 (plaintext tcp:// only to this machine, or with broker.allow_plaintext)")
	}
	u, err := url.Parse(norm)
	if err != nil {
		return fail(err.Error(), "fix broker.urls")
	}
	host, port := u.Hostname(), u.Port()
	secure := u.Scheme != "tcp" && u.Scheme != "mqtt"

	// Name lookup, on its own so that DNS trouble is told apart.
	addrs := []string{host}
	if net.ParseIP(host) == nil {
		lctx, cancel := context.WithTimeout(ctx, o.Timeout)
		addrs, err = net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		if err != nil {
			return fail(fmt.Sprintf("cannot resolve %s: %v", host, err),
				"DNS: check /etc/resolv.conf and the link's DNS servers (APN), or the host name in broker.urls")
		}
	}

	// TCP.
	d := net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(addrs[0], port))
	if err != nil {
		return fail(fmt.Sprintf("TCP %s: %v", net.JoinHostPort(host, port), shortNetErr(err)), tcpHint(err))
	}
	how := "plaintext"

	// TLS.
	if secure {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if tlsCfg != nil {
			c = tlsCfg.Clone()
		}
		c.ServerName = host
		tc := tls.Client(conn, c)
		hctx, cancel := context.WithTimeout(ctx, o.Timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			d, h := tlsFailure(err)
			return fail(fmt.Sprintf("TLS with %s: %s", host, d), h)
		}
		st := tc.ConnectionState()
		how = tls.VersionName(st.Version)
		if len(c.Certificates) > 0 {
			how += ", client certificate"
		}
		conn = tc
	} else if b.AllowPlaintext && !isLoopbackHost(host) {
		how = "plaintext over the network (broker.allow_plaintext)"
	}

	// MQTT CONNECT on the connection just made, so the earlier steps'
	// verdicts stay exact.
	used := false
	opts := paho.NewClientOptions().
		AddBroker(norm).
		SetClientID(clientID).
		SetUsername(b.Username).
		SetPassword(password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetProtocolVersion(4).
		SetConnectTimeout(o.Timeout).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			if used {
				return nil, errors.New("selftest: one connection per check")
			}
			used = true
			return conn, nil
		})
	cl := paho.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(o.Timeout + time.Second) {
		conn.Close()
		return fail(fmt.Sprintf("%s: no CONNACK within %s (%s)", host, o.Timeout, how),
			"the port answers but not as an MQTT broker: check the port number and scheme in broker.urls")
	}
	if err := tok.Error(); err != nil {
		conn.Close()
		switch {
		case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
			return fail(fmt.Sprintf("%s refused the login: bad user name or password (%s)", host, how),
				"check broker.username and the content of broker.password_file")
		case errors.Is(err, packets.ErrorRefusedNotAuthorised):
			return fail(fmt.Sprintf("%s refused the login: not authorised (%s)", host, how),
				"the broker does not allow this client: check its ACLs for this user or certificate")
		case errors.Is(err, packets.ErrorRefusedIDRejected):
			return fail(fmt.Sprintf("%s rejected client id %q (%s)", host, clientID, how),
				"the broker restricts client ids: allow kestrel-{fleet}-{device}-selftest")
		}
		return fail(fmt.Sprintf("%s: MQTT connect failed: %v (%s)", host, err, how),
			"the port answers but the MQTT handshake failed: check the scheme and port in broker.urls")
	}
	cl.Disconnect(100)
	who := "anonymous"
	if b.Username != "" {
		who = "as " + b.Username
	} else if tlsCfg != nil && len(tlsCfg.Certificates) > 0 {
		who = "by certificate"
	}
	return pass(fmt.Sprintf("connected to %s (%s), logged in %s", net.JoinHostPort(host, port), how, who))
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func shortNetErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func tcpHint(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: broker down, or wrong port in broker.urls"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "no route: is the radio/modem link up (APN, registration)? check `ip route`"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer: a firewall drops it, the link is down, or the host is wrong"
	}
	return "check the network link and broker.urls"
}

// tlsFailure tells the common handshake failures apart.
func tlsFailure(err error) (detail, hint string) {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ae tls.AlertError
	switch {
	case errors.As(err, &ua):
		return "server certificate signed by an unknown authority",
			"broker.ca_file must hold the CA that signed the broker's certificate (empty ca_file = system roots)"
	case errors.As(err, &he):
		return "server certificate is not for this host: " + he.Error(),
			"use the host name the certificate names (its SAN) in broker.urls"
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "server certificate expired or not yet valid: " + ci.Error(),
			"check the clock (see the clock row) and the broker certificate's dates"
	case errors.As(err, &ae), strings.Contains(err.Error(), "remote error"):
		return "the broker rejected the handshake: " + err.Error(),
			"the broker wants a client certificate it trusts: check broker.cert_file and key_file, and that the broker's CA signed them"
	case errors.Is(err, context.DeadlineExceeded):
		return "handshake timed out", "the port may not speak TLS: tls:// URLs usually use port 8883"
	}
	return err.Error(), "is the port a TLS port? tls:// URLs usually use port 8883"
}

// clientCertDates fails an expired client certificate and notes one that
// expires within 30 days.
func clientCertDates(c *tls.Config, now time.Time) (Result, bool) {
	if len(c.Certificates) == 0 {
		return Result{}, false
	}
	leaf := c.Certificates[0].Leaf
	if leaf == nil && len(c.Certificates[0].Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificates[0].Certificate[0])
	}
	if leaf == nil {
		return Result{}, false
	}
	switch {
	case now.After(leaf.NotAfter):
		return fail(fmt.Sprintf("client certificate expired on %s", leaf.NotAfter.UTC().Format("2006-01-02")),
			"issue a new client certificate (broker.cert_file); if the date looks wrong, check the clock"), true
	case now.Before(leaf.NotBefore):
		return fail(fmt.Sprintf("client certificate not valid until %s", leaf.NotBefore.UTC().Format("2006-01-02")),
			"check the clock (see the clock row)"), true
	case leaf.NotAfter.Sub(now) < 30*24*time.Hour:
		return Result{Detail: fmt.Sprintf("client certificate expires on %s", leaf.NotAfter.UTC().Format("2006-01-02"))}, false
	}
	return Result{}, false
}

// looseMode says how a secret file is too open, or "" if it is not.
func looseMode(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Sprintf("readable by others (mode %04o)", m)
	}
	return ""
}
