package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// sessionRunner is one MQTT session with its own lifetime, so that a
// reload can replace the broker session without touching anything else.
type sessionRunner struct {
	sess   *mqtt.Session
	cfg    config.Config // what it was built from
	cancel context.CancelFunc
	done   chan struct{}
}

// ErrBrokerConfig wraps an error in the broker settings that stops the
// MQTT session from being built (a CA or certificate that cannot be read,
// options the session refuses): a config problem, which restarting does
// not cure (`kestrel run` exits 78, EX_CONFIG).
var ErrBrokerConfig = errors.New("broker config")

// sessionOptions turns the broker section into session options. Secrets
// (the password file) are read here and never logged.
func (a *Agent) sessionOptions(cfg config.Config) (mqtt.Options, error) {
	b := cfg.Broker
	opts := mqtt.Options{
		URLs:           b.URLs,
		Fleet:          cfg.Device.Fleet,
		Device:         cfg.Device.ID,
		Boot:           a.boot,
		Version:        a.opts.Version,
		AllowPlaintext: b.AllowPlaintext,
		Username:       b.Username,
		Profile:        b.Profile,
		KeepAlive:      b.KeepAlive.Duration,
		BatchMax:       b.BatchMax,
		BatchAge:       b.BatchAge.Duration,
		HighAge:        b.HighAge.Duration,
		BulkAge:        b.BulkAge.Duration,
		InFlight:       b.InFlight,
		RateLimit:      b.RateLimit,
		MaxInbound:     cfg.Remote.MaxMessage,
		OnOversize:     a.msgr.oversize,
		State:          a.stateFields,
		Logger:         a.log,
	}
	for _, f := range []struct{ key, path string }{{"broker.key_file", b.KeyFile}, {"broker.password_file", b.PasswordFile}} {
		if err := checkSecretMode(f.key, f.path); err != nil {
			return opts, err
		}
	}
	if b.CAFile != "" || b.CertFile != "" || b.KeyFile != "" {
		tlsCfg, err := mqtt.LoadTLS(b.CAFile, b.CertFile, b.KeyFile)
		if err != nil {
			return opts, fmt.Errorf("broker TLS: %w", err)
		}
		opts.TLS = tlsCfg
	}
	if !b.RequireClientCert && !b.MutualTLS() {
		a.log.Warn("broker.require_client_cert = false: the broker does not authenticate this device by certificate (state message: mtls false)", "brokers", mqtt.RedactURLs(b.URLs))
	}
	if b.PasswordFile != "" {
		pw, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			return opts, fmt.Errorf("broker.password_file: %w", err)
		}
		opts.Password = strings.TrimRight(string(pw), "\r\n")
	}
	return opts, nil
}

func (a *Agent) startSession(ctx context.Context, cfg config.Config) (*sessionRunner, error) {
	sess, err := a.newSession(cfg)
	if err != nil {
		return nil, err
	}
	return a.runSession(ctx, sess, cfg), nil
}

// newSession validates the broker settings and builds an idle session, so
// a reload can refuse a bad broker change before touching the running one.
func (a *Agent) newSession(cfg config.Config) (*mqtt.Session, error) {
	opts, err := a.sessionOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBrokerConfig, err)
	}
	sess, err := mqtt.New(opts, &outbox{sp: a.spool, log: a.log.With("part", "outbox")})
	if err != nil {
		return nil, fmt.Errorf("%w: mqtt session: %w", ErrBrokerConfig, err)
	}
	return sess, nil
}

func (a *Agent) runSession(ctx context.Context, sess *mqtt.Session, cfg config.Config) *sessionRunner {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &sessionRunner{sess: sess, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	if a.msgr != nil {
		a.msgr.attach(sess)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(r.done)
		if err := sess.Run(sctx); err != nil {
			a.log.Error("mqtt session ended", "err", err)
		}
	}()
	return r
}

// stop gives the session up to grace to send what is waiting (pending
// reports how many records are), then ends it. Whatever is left stays in
// the spool for the next run.
func (r *sessionRunner) stop(grace time.Duration, pending func() int) {
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && r.sess.Connected() && pending() > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	r.cancel()
	<-r.done
	r.sess.Close()
}

// checkSecretMode refuses a secret file (the TLS client key, the broker
// password) that anyone but its owner may read or write: keys and the
// password file are 0600, owned by the agent's user (docs/operations.md),
// as kestrel selftest checks too.
func checkSecretMode(key, path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil // the read that follows says why
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s %s is open to other users (mode %04o): chmod 0600 it, owned by the agent's user", key, path, m)
	}
	return nil
}
