package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/identity"
)

// TestAgentSpoolEncrypt: with spool.encrypt the agent makes the spool key
// (0600, beside the device key), says so in the state message, and what
// it spooled reads back after a restart with encryption off (the key kept).
func TestAgentSpoolEncrypt(t *testing.T) {
	cfg := testConfig(t, "tcp://127.0.0.1:1", "")
	cfg.Spool.Encrypt = true
	a, err := agent.New(cfg, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.StateFields()["spool_sealing"]; got != "aes-256-gcm" {
		t.Fatalf("spool_sealing %v", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(agent.SpoolKeyFile(cfg))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("spool key: %v %v", st, err)
	}
	if filepath.Dir(agent.SpoolKeyFile(cfg)) != filepath.Dir(identity.KeyFile(cfg)) {
		t.Fatalf("spool key %s not beside the device key %s", agent.SpoolKeyFile(cfg), identity.KeyFile(cfg))
	}
	cfg.Spool.Encrypt = false
	a, err = agent.New(cfg, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m := a.Spool().Metrics()
	if a.StateFields()["spool_sealing"] != "off" || m.Recovered == 0 || m.RecoveryLostRecords != 0 {
		t.Fatalf("after turning encryption off: sealing %v, %d recovered, %d lost", a.StateFields()["spool_sealing"], m.Recovered, m.RecoveryLostRecords)
	}
}
