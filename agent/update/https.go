package update

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// HTTPClient is the client for releases that name an https:// URL: it
// trusts broker.ca_file (the fleet's CA; the system's roots when empty)
// and presents broker.cert_file/key_file when set, so that a release
// server can ask for the same mutual TLS as the broker. It follows no
// redirect to plain http.
func HTTPClient(cfg config.Config) (*http.Client, error) {
	b := cfg.Broker
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.CAFile != "" {
		pem, err := os.ReadFile(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("update: release server CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("update: release server CA %s: no PEM certificate", b.CAFile)
		}
	}
	if b.CertFile != "" && b.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("update: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       time.Minute,
		MaxIdleConns:          1,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s refused: releases come over https only", req.URL.Scheme)
		}
		return nil
	}}, nil
}
