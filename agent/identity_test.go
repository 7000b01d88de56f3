package agent_test

import (
	"os"
	"testing"

	"github.com/kestrel-edge/kestrel/agent"
	"github.com/kestrel-edge/kestrel/agent/identity"
)

// TestDeviceKeyAnnouncedAndKept: the agent makes its device key at first
// start (0600, beside the remote state), announces the public half in the
// state message, and keeps the same key across restarts.
func TestDeviceKeyAnnouncedAndKept(t *testing.T) {
	cfg := testConfig(t, "tcp://127.0.0.1:1", "")
	start := func() string {
		a, err := agent.New(cfg, agent.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		got, _ := a.StateFields()["device_key"].(string)
		if got == "" || got != a.Identity().PublicString() {
			t.Fatalf("state message device_key %q, agent key %q", got, a.Identity().PublicString())
		}
		return got
	}
	first := start()
	st, err := os.Stat(identity.KeyFile(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("device key mode %v, want 0600", st.Mode().Perm())
	}
	if again := start(); again != first {
		t.Errorf("the device key changed across a restart: %s then %s", first, again)
	}
}
