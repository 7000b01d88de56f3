package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/hwtest/broker"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// forger is someone with broker credentials but not the device's key.
type forger struct{ priv ed25519.PrivateKey }

func (f forger) ID() string             { return fleet.KeyID(f.priv.Public().(ed25519.PublicKey)) }
func (f forger) Sign(msg []byte) []byte { return ed25519.Sign(f.priv, msg) }

// TestDeviceSignedReportsAndReplies: with the real agent, config reports
// and command replies are signed with the device's own key, and kestrelctl
// checks them against the key the device announces in its retained state
// message. A report forged by a broker-credential holder (unsigned, or
// signed by another key) is flagged and not believed.
func TestDeviceSignedReportsAndReplies(t *testing.T) {
	b, _, dir, prefix, common := layerRig(t)
	f := filepath.Join(dir, "c.toml")
	os.WriteFile(f, []byte("[tracking]\ndistance = 40.0\n"), 0o644)
	args := append(append([]string{"config", "push", "--device", "bwc-0001"}, common...), "--version", "5", f)
	code, out, e := fleetRun(t, args...)
	if code != 0 || !regexp.MustCompile(`(?m)^bwc-0001\s+applied\s+5\s+verified`).MatchString(out) {
		t.Fatalf("push: exit %d, want applied and verified\n%s\n%s", code, out, e)
	}
	// A command reply, signed on its own reply channel.
	code, out, e = fleetRun(t, "cmd", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0001", "--sign-key", prefix+".key", "--timeout", "10s", "privacy", "on")
	var reply struct {
		Status, Signature string
	}
	if code != 0 || json.Unmarshal([]byte(out), &reply) != nil || reply.Status != "ok" || reply.Signature != fleet.VerdictVerified {
		t.Fatalf("cmd: exit %d %q\n%s", code, out, e)
	}
	get := func() string {
		t.Helper()
		_, out, _ := fleetRun(t, "config", "get", "--broker", b.URL(), "--fleet", "met", "--device", "bwc-0001", "--wait", "1s")
		return out
	}
	if out := get(); !regexp.MustCompile(`(?m)^bwc-0001\s+5\s+5\s+applied\s+\S+\s+verified`).MatchString(out) {
		t.Fatalf("config get: the device's own report is not verified:\n%s", out)
	}

	// Forgeries on the retained report topic, after the device's own.
	conn := &fleetconn.Broker{URL: b.URL(), Fleet: "met"}
	cl, err := conn.Connect(context.Background(), "forger")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(100)
	topic := fleet.DeviceTopic("met", "bwc-0001", fleet.ChannelReported)
	fake, _ := json.Marshal(&fleet.Report{Device: "bwc-0001", Fleet: "met", Version: 6, Status: fleet.StatusApplied, Running: 6, Time: time.Now().UnixMilli()})
	_, other := testForger(t)
	signed, _ := fleet.Seal(other, "met", "bwc-0001", fleet.ChannelReported, fake)
	for _, tc := range []struct {
		name, payload, verdict string
	}{
		{"unsigned", string(fake), fleet.VerdictMissing},
		{"another key", string(signed), fleet.VerdictKeyChanged},
	} {
		if err := fleetconn.Wait(context.Background(), cl.Publish(topic, 1, true, []byte(tc.payload)), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if out := get(); !strings.Contains(out, tc.verdict+" (NOT BELIEVED") {
			t.Errorf("forged report, %s: config get does not flag it as %q:\n%s", tc.name, tc.verdict, out)
		}
	}
}

func testForger(t *testing.T) (ed25519.PublicKey, forger) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, forger{priv}
}

// TestPushTableDoesNotBelieveForgedReports: a report whose device
// signature fails counts as a failure ("untrusted"), is not believed by
// the view (no dry run or staging from it), and the push exits non-zero.
func TestPushTableDoesNotBelieveForgedReports(t *testing.T) {
	devPub, dev := testForger(t)
	_, other := testForger(t)
	body, _ := json.Marshal(&fleet.Report{Device: "bwc-1", Fleet: "met", Version: 9, Status: fleet.StatusApplied, Running: 9})
	topic := fleet.DeviceTopic("met", "bwc-1", fleet.ChannelReported)
	state := stateMsg(true, map[string]any{"device_key": fleet.EncodePublicKey(devPub)})
	for _, tc := range []struct {
		name   string
		signer fleet.DeviceSigner
		ok     bool
	}{{"the device's key", dev, true}, {"another key", other, false}, {"unsigned", nil, false}} {
		p := body
		if tc.signer != nil {
			p, _ = fleet.Seal(tc.signer, "met", "bwc-1", fleet.ChannelReported, body)
		}
		v := newFleetView("met")
		// The report first: addAll files the state (and its key) before it.
		v.addAll([]paho.Message{testMessage{topic, p}, testMessage{fleet.DeviceTopic("met", "bwc-1", fleet.ChannelState), state}})
		if (v.reports["bwc-1"] != nil) != tc.ok || (v.untrusted["bwc-1"] != "") == tc.ok {
			t.Errorf("%s: view believes the report: %v (untrusted: %q)", tc.name, v.reports["bwc-1"] != nil, v.untrusted["bwc-1"])
		}
		j := v.add(testMessage{topic, p})
		rep := &pushReport{Version: 9, Devices: []deviceResult{*judgeResult("bwc-1", "all", 9, "", j)}}
		var out strings.Builder
		printPushReport(&out, rep)
		err := pushVerdict(rep)
		if tc.ok != (err == nil) || tc.ok == strings.Contains(out.String(), "NOT BELIEVED") {
			t.Errorf("%s: err %v\n%s", tc.name, err, out.String())
		}
	}
}

// testMessage is a paho.Message as the broker delivers it.
type testMessage struct {
	topic   string
	payload []byte
}

func (m testMessage) Duplicate() bool   { return false }
func (m testMessage) Qos() byte         { return 1 }
func (m testMessage) Retained() bool    { return true }
func (m testMessage) Topic() string     { return m.topic }
func (m testMessage) MessageID() uint16 { return 1 }
func (m testMessage) Payload() []byte   { return m.payload }
func (m testMessage) Ack()              {}

// TestThresholdPush: a device with remote.config_threshold = 2 refuses a
// push signed with one fleet key and applies one signed with two
// (config push --sign-key A --sign-key B); the same key given twice is
// refused by kestrelctl before anything is published.
func TestThresholdPush(t *testing.T) {
	b := broker.StartMochi(t)
	dir := t.TempDir()
	var pubs []string
	for _, n := range []string{"a", "b"} {
		if code, _, e := fleetRun(t, "keygen", "--out", filepath.Join(dir, n)); code != 0 {
			t.Fatal(e)
		}
		p, _ := os.ReadFile(filepath.Join(dir, n+".pub"))
		pubs = append(pubs, "config+commands:"+strings.TrimSpace(string(p)))
	}
	a := realDeviceWith(t, b.URL(), "bwc-0001", nil, func(c *config.Config) {
		c.Remote.TrustedKeys = pubs
		c.Remote.ConfigThreshold = 2
	})
	f := filepath.Join(dir, "c.toml")
	os.WriteFile(f, []byte("[tracking]\ndistance = 33.0\n"), 0o644)
	common := []string{"config", "push", "--device", "bwc-0001", "--broker", b.URL(), "--fleet", "met", "--timeout", "10s", "--devices", "bwc-0001"}
	code, out, e := fleetRun(t, append(common, "--sign-key", filepath.Join(dir, "a.key"), "--version", "7", f)...)
	if code != 1 || !regexp.MustCompile(`(?m)^bwc-0001\s+rejected\s.*1 of 2 required`).MatchString(out) {
		t.Fatalf("one key of two: exit %d\n%s\n%s", code, out, e)
	}
	code, out, e = fleetRun(t, append(common, "--sign-key", filepath.Join(dir, "a.key"), "--sign-key", filepath.Join(dir, "a.key"), "--version", "8", f)...)
	if code == 0 || !strings.Contains(e, "given twice") {
		t.Fatalf("the same key twice: exit %d\n%s\n%s", code, out, e)
	}
	code, out, e = fleetRun(t, append(common, "--sign-key", filepath.Join(dir, "a.key"), "--sign-key", filepath.Join(dir, "b.key"), "--version", "9", f)...)
	if code != 0 || a.Config().Tracking.Distance != 33 {
		t.Fatalf("two keys: exit %d, distance %v\n%s\n%s", code, a.Config().Tracking.Distance, out, e)
	}
}
