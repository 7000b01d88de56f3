package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

// Outbox is what the session drains; the agent adapts its spool to it.
type Outbox interface {
	// Take returns the next records in sending order (emergency, then live
	// data newest first, then the backlog oldest first), at most max of
	// them, appended to dst, and marks them in flight.
	Take(dst []kestrel.Record, max int) ([]kestrel.Record, error)
	// Commit removes records for good: the broker acknowledged them.
	Commit(seqs []uint64) error
	// Release puts records that were not acknowledged back in the queue.
	Release(seqs []uint64)
}

// Notifier is an optional Outbox capability: Ready yields when new records
// may be waiting. Without it the session polls every Options.Poll.
type Notifier interface {
	Ready() <-chan struct{}
}

// UrgentTaker is an optional Outbox capability: like Take, but only records
// of priority High or above. With it an emergency goes out even while the
// in-flight window is full of backlog; without it, it waits for the next
// PUBACK (one round trip).
type UrgentTaker interface {
	TakeUrgent(dst []kestrel.Record, max int) ([]kestrel.Record, error)
}

// Options configure a Session. Zero durations and sizes take the defaults
// named on each field.
type Options struct {
	// URLs are the brokers, tried in order for failover: tls://, ssl://,
	// mqtts:// (TLS) or tcp://, mqtt:// (plaintext). A missing port means
	// 8883 for TLS and 1883 for plaintext. A URL with a user or password
	// is refused (ErrURLCredentials): they go in Username and Password.
	URLs []string
	// ClientID defaults to "kestrel-{fleet}-{device}".
	ClientID string
	Fleet    string
	Device   string
	// Boot is the agent's boot id, carried in the birth and death messages.
	Boot    uint32
	Version string

	// TLS is used for TLS URLs; LoadTLS builds a mutual TLS 1.2+ config.
	// With nil, TLS URLs verify the server against the system roots and
	// present no client certificate. The minimum version is raised to 1.2.
	TLS *tls.Config
	// AllowPlaintext permits plaintext URLs to non-loopback hosts. The
	// session logs a warning and sets "plaintext" in its state message.
	AllowPlaintext bool
	Username       string
	Password       string

	// Profile names the link profile (profile.go): "lte" (default) or
	// "narrowband". It supplies KeepAlive, PingTimeout, BatchAge, HighAge
	// and BulkAge where those are zero.
	Profile string

	// KeepAlive is the MQTT keepalive (default: the profile's); a broker
	// that does not answer a PINGREQ within PingTimeout (default: the
	// profile's) counts as lost. ConnectTimeout bounds the TCP, TLS and CONNACK
	// exchange of one attempt (default 20s).
	KeepAlive      time.Duration
	PingTimeout    time.Duration
	ConnectTimeout time.Duration
	// AckTimeout bounds the wait for a PUBACK (or SUBACK); past it the
	// connection is taken for dead and rebuilt (default 60s).
	AckTimeout time.Duration

	// A telemetry batch closes at BatchMax records (default 500), about
	// BatchBytes of payload (default 32 KiB), or when one of its records
	// has waited its priority's age: BatchAge for normal, BulkAge for bulk
	// (defaults: the profile's; negative: send at once). High records wait
	// at most HighAge (default the profile's, 0: at once; at most 1s) and
	// go on events; emergencies never wait. A backlog never waits on an
	// age: the rest of a drain goes out at once.
	BatchMax   int
	BatchBytes int
	BatchAge   time.Duration
	HighAge    time.Duration
	BulkAge    time.Duration
	// InFlight is the number of unacknowledged telemetry messages allowed
	// (default 8). Event messages may exceed it: they never wait.
	InFlight int
	// RateLimit caps the average payload rate in bytes per second
	// (0: none). Events are never held back by it but count against it.
	// With a cap, BatchBytes is lowered to 5 seconds of link time (at
	// least 256), so an emergency never queues behind minutes of backlog.
	RateLimit int

	// BackoffMin and BackoffMax bound the reconnect delay (defaults 1s and
	// 2m). Each delay is drawn uniformly from [0, min(BackoffMax,
	// BackoffMin*2^n)) ("full jitter"), also before the first reconnect
	// after a loss, so that a fleet spreads out over a restarted broker.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// Poll is how often the Outbox is polled when it is not a Notifier
	// (default 100ms); with a Notifier it is a safety net (5 times slower).
	Poll time.Duration

	// MaxInbound bounds an inbound message (remaining length of its
	// PUBLISH packet; default 64 KiB). A larger one is discarded as it is
	// read, never buffered (limit.go), and OnOversize is told.
	MaxInbound int
	OnOversize func(topic string, size int)

	// State returns extra fields for the birth message (config_version,
	// capabilities, spool, health). It must not block.
	State func() map[string]any

	Logger *slog.Logger
}

// Errors that callers branch on.
var (
	ErrClosed       = errors.New("mqtt session closed")
	ErrNotConnected = errors.New("mqtt session not connected")
	ErrPlaintext    = errors.New("plaintext broker URL for a non-loopback host (set allow_plaintext to permit it)")
	ErrAckTimeout   = errors.New("no acknowledgement from broker in time")
)

const (
	defaultConnectTimeout = 20 * time.Second
	defaultAckTimeout     = 60 * time.Second
	defaultBatchMax       = 500
	defaultBatchBytes     = 32 << 10
	defaultInFlight       = 8
	defaultBackoffMin     = time.Second
	defaultBackoffMax     = 2 * time.Minute
	defaultPoll           = 100 * time.Millisecond
	defaultMaxInbound     = 64 << 10
	// maxPacket keeps a batch well under the 256 MiB MQTT limit and under
	// the default limits of common brokers.
	maxBatchBytes = 1 << 20
	// maxBatchSeconds caps a batch under RateLimit to this many seconds
	// of link time.
	maxBatchSeconds = 5
)

// BrokerURL is a broker URL checked by the session's rules (ParseBrokerURL).
type BrokerURL struct {
	// URL is normalised as paho takes it: scheme and host:port only.
	URL string
	// TLS: a tls://, ssl:// or mqtts:// URL.
	TLS bool
	// Loopback: the host is loopback by name or literal address.
	Loopback bool
}

// Insecure reports plaintext to a host that is not loopback, which only
// AllowPlaintext permits; the session logs it and flags it in the state
// message.
func (b BrokerURL) Insecure() bool { return !b.TLS && !b.Loopback }

// normalize fills defaults and validates. It returns the parsed brokers.
func (o *Options) normalize() ([]BrokerURL, error) {
	var errs []error
	if len(o.URLs) == 0 {
		errs = append(errs, errors.New("no broker URL"))
	}
	if err := checkTopicLevel("fleet", o.Fleet); err != nil {
		errs = append(errs, err)
	}
	if err := checkTopicLevel("device", o.Device); err != nil {
		errs = append(errs, err)
	}
	if o.ClientID == "" {
		o.ClientID = "kestrel-" + o.Fleet + "-" + o.Device
	}
	prof, err := LookupProfile(o.Profile)
	if err != nil {
		errs = append(errs, err)
	}
	o.Profile = prof.Name
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.KeepAlive, prof.KeepAlive}, {&o.PingTimeout, prof.PingTimeout},
		{&o.BatchAge, prof.NormalAge}, {&o.HighAge, prof.HighAge}, {&o.BulkAge, prof.BulkAge},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.HighAge > maxHighAge {
		errs = append(errs, fmt.Errorf("high age %v is over the %v bound", o.HighAge, maxHighAge))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"connect timeout", &o.ConnectTimeout, defaultConnectTimeout},
		{"ack timeout", &o.AckTimeout, defaultAckTimeout},
		{"backoff min", &o.BackoffMin, defaultBackoffMin},
		{"backoff max", &o.BackoffMax, defaultBackoffMax},
		{"poll", &o.Poll, defaultPoll},
	} {
		switch {
		case *d.v < 0:
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, *d.v))
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if o.KeepAlive < 0 {
		errs = append(errs, fmt.Errorf("keepalive %v is negative", o.KeepAlive))
	}
	if o.PingTimeout < 0 {
		errs = append(errs, fmt.Errorf("ping timeout %v is negative", o.PingTimeout))
	}
	if o.KeepAlive > 0 && o.KeepAlive < time.Second {
		errs = append(errs, fmt.Errorf("keepalive %v is under the 1s MQTT resolution", o.KeepAlive))
	}
	if o.BackoffMax < o.BackoffMin {
		errs = append(errs, fmt.Errorf("backoff max %v is below backoff min %v", o.BackoffMax, o.BackoffMin))
	}
	for _, n := range []struct {
		name string
		v    *int
		def  int
	}{
		{"batch max", &o.BatchMax, defaultBatchMax},
		{"batch bytes", &o.BatchBytes, defaultBatchBytes},
		{"in-flight window", &o.InFlight, defaultInFlight},
		{"max inbound", &o.MaxInbound, defaultMaxInbound},
	} {
		switch {
		case *n.v < 0:
			errs = append(errs, fmt.Errorf("%s %d is negative", n.name, *n.v))
		case *n.v == 0:
			*n.v = n.def
		}
	}
	if o.BatchMax > wire.MaxRecords {
		errs = append(errs, fmt.Errorf("batch max %d is over the wire limit of %d records", o.BatchMax, wire.MaxRecords))
	}
	if o.BatchBytes > maxBatchBytes {
		errs = append(errs, fmt.Errorf("batch bytes %d is over the %d limit", o.BatchBytes, maxBatchBytes))
	}
	if o.RateLimit < 0 {
		errs = append(errs, fmt.Errorf("rate limit %d is negative", o.RateLimit))
	}
	if o.RateLimit > 0 {
		// On a narrowband link a batch must pass in seconds, not minutes:
		// an emergency queues behind it in TCP, and the PUBACK deadline
		// must stay meaningful.
		o.BatchBytes = min(o.BatchBytes, max(256, o.RateLimit*maxBatchSeconds))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TLS != nil {
		c := o.TLS.Clone()
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		o.TLS = c
	}
	var bs []BrokerURL
	for _, u := range o.URLs {
		b, err := ParseBrokerURL(u, o.AllowPlaintext)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bs = append(bs, b)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mqtt options: %w", err)
	}
	return bs, nil
}

func checkTopicLevel(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if strings.ContainsAny(v, "/+#\x00") {
		return fmt.Errorf("%s %q contains one of / + # or NUL", what, v)
	}
	return nil
}

// ErrURLCredentials: a broker URL carries a user or password. paho would
// take them from the URL, and the URL is logged and reported, so they are
// refused rather than dropped.
var ErrURLCredentials = errors.New("broker URL carries a user or password: put the user in broker.username and the password in broker.password_file")

// ParseBrokerURL checks a broker URL by the session's rules: scheme tcp,
// mqtt (plaintext), ssl, tls or mqtts (TLS); a host; a port in 1..65535 or
// none (1883 plaintext, 8883 TLS); no user or password; plaintext only to
// loopback unless allowPlaintext. Errors show the URL redacted. The agent's
// config validation, the session and the tools share it, so that what one
// accepts the others do.
func ParseBrokerURL(raw string, allowPlaintext bool) (BrokerURL, error) {
	shown := RedactURL(raw)
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL unredacted
		}
		return BrokerURL{}, fmt.Errorf("broker URL %q: %w", shown, err)
	}
	var b BrokerURL
	var port string
	switch u.Scheme {
	case "tcp", "mqtt":
		port = "1883"
	case "ssl", "tls", "mqtts":
		b.TLS, port = true, "8883"
	default:
		return BrokerURL{}, fmt.Errorf("broker URL %q: scheme %q is not tcp, mqtt, ssl, tls or mqtts", shown, u.Scheme)
	}
	if u.User != nil {
		return BrokerURL{}, fmt.Errorf("broker URL %q: %w", shown, ErrURLCredentials)
	}
	host := u.Hostname()
	if host == "" {
		return BrokerURL{}, fmt.Errorf("broker URL %q: no host", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return BrokerURL{}, fmt.Errorf("broker URL %q: port %s is not in 1..65535", shown, p)
		}
		port = p
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return BrokerURL{}, fmt.Errorf("broker URL %q: a path, query or fragment has no meaning for MQTT over TCP", shown)
	}
	b.Loopback = isLoopback(host)
	if !b.TLS && !allowPlaintext && !b.Loopback {
		return BrokerURL{}, fmt.Errorf("broker URL %q: %w", shown, ErrPlaintext)
	}
	n := url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(host, port)}
	b.URL = n.String()
	return b, nil
}

// RedactURL returns raw with any password replaced by "xxxxx"
// (url.URL.Redacted), for logs, errors and reports. An unparseable URL
// loses everything before its last '@' after the scheme.
func RedactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		return raw[:i+3] + "xxxxx" + raw[at:]
	}
	return "xxxxx" + raw[at:]
}

// RedactURLs is RedactURL over a list.
func RedactURLs(raws []string) []string {
	out := make([]string, len(raws))
	for i, r := range raws {
		out[i] = RedactURL(r)
	}
	return out
}

// isLoopback decides by name and literal address only: resolving a name
// here would let DNS decide whether data leaves the box unencrypted.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoadTLS builds a TLS 1.2+ client config from the agent's broker.ca_file,
// cert_file and key_file. The broker must present a certificate signed by
// the CA in caFile, or, with caFile empty, by one of the system roots. The
// session presents the certificate and key in certFile and keyFile (mutual
// TLS); with both empty it presents none. One of the two without the other
// is an error.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read broker CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("broker CA %s: no PEM certificate found", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client certificate: the certificate and key files go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// CheckURL validates a broker URL by the session's rules (scheme, host,
// plaintext only to loopback unless allowPlaintext) and returns it as paho
// takes it, with the default port filled in. Tools share it so that the
// rules are the same everywhere.
func CheckURL(raw string, allowPlaintext bool) (string, error) {
	b, err := ParseBrokerURL(raw, allowPlaintext)
	if err != nil {
		return "", err
	}
	return b.URL, nil
}
