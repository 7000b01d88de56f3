// Package otafake is a device's update side with real behaviour, for
// testing the operator side (kestrelctl update, the platform's updates
// table) against a real broker while the device side (agent/update) lands
// on its own: it announces a device key and groups in a retained state
// message, takes release manifests from its device, group and fleet
// update/desired topics, checks them as a device must (shape, release-role
// signature, target, platform, anti-rollback, spool format, expiry),
// fetches the retained chunks of the binary or of a delta and patches it
// (transport/delta), checks the SHA-256, and reports each step on
// update/reported, sealed with its device key. What it then does with the
// binary is the Outcome: good, or reverted with a reason, as a health gate
// would decide. It installs nothing.
package otafake

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinylib/msgp/msgp"

	"github.com/kestrel-edge/kestrel/transport/delta"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Outcome decides what became of a verified binary: fleet.UpdateGood, or
// fleet.UpdateReverted (or failed) with a reason.
type Outcome func(r *fleet.Release, binary []byte) (state, reason string)

// Revert is an Outcome whose health gate always fails.
func Revert(reason string) Outcome {
	return func(*fleet.Release, []byte) (string, string) { return fleet.UpdateReverted, reason }
}

// Device is one fake device. Set the fields, then Start.
type Device struct {
	Fleet, ID      string
	Groups         []string
	Trusted        []string // keyring entries (ROLE:BASE64KEY), as remote.trusted_keys
	Platform       fleet.Platform
	RunningSeq     uint64
	RunningVersion string
	SpoolFormat    int
	Outcome        Outcome // nil: good
	// Base is the running binary: with it, a release that carries a delta
	// against it is fetched as the delta.
	Base []byte
	// ChunkWait bounds the wait for a blob's chunks.
	ChunkWait time.Duration

	priv    ed25519.PrivateKey
	forger  ed25519.PrivateKey // signs the reports instead, when set
	kr      fleet.Keyring
	cl      paho.Client
	queue   chan []byte
	mu      sync.Mutex
	reports []fleet.UpdateReport
	done    map[uint64]bool // release seqs handled to an end
	chunks  map[string]map[int][]byte
	notify  chan struct{}
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

type signer struct{ priv ed25519.PrivateKey }

func (s signer) ID() string             { return fleet.KeyID(s.priv.Public().(ed25519.PublicKey)) }
func (s signer) Sign(msg []byte) []byte { return ed25519.Sign(s.priv, msg) }

// Start connects the device to brokerURL and publishes its state; the test
// ends it.
func Start(t testing.TB, brokerURL string, d *Device) *Device {
	t.Helper()
	if err := d.start(brokerURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func (d *Device) start(brokerURL string) error {
	var err error
	if d.kr, err = fleet.NewKeyring(d.Trusted); err != nil {
		return err
	}
	if _, d.priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return err
	}
	if d.SpoolFormat == 0 {
		d.SpoolFormat = 1
	}
	if d.ChunkWait == 0 {
		d.ChunkWait = 20 * time.Second
	}
	d.queue, d.notify = make(chan []byte, 16), make(chan struct{}, 1)
	d.done, d.chunks = map[uint64]bool{}, map[string]map[int][]byte{}
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID("otafake-" + d.ID).SetCleanSession(true).
		SetAutoReconnect(false).SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
	d.cl = paho.NewClient(o)
	if err := wait(d.cl.Connect()); err != nil {
		return fmt.Errorf("otafake %s: connect: %w", d.ID, err)
	}
	if err := d.publishState(); err != nil {
		return err
	}
	var ctx context.Context
	ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.loop(ctx)
	topics := []string{fleet.Device(d.Fleet, d.ID).UpdateTopic(), fleet.AllDevices(d.Fleet).UpdateTopic()}
	for _, g := range d.Groups {
		topics = append(topics, fleet.Group(d.Fleet, g).UpdateTopic())
	}
	for _, tp := range topics {
		if err := wait(d.cl.Subscribe(tp, 1, func(_ paho.Client, m paho.Message) {
			if len(m.Payload()) > 0 {
				d.queue <- append([]byte(nil), m.Payload()...)
			}
		})); err != nil {
			return fmt.Errorf("otafake %s: subscribe %s: %w", d.ID, tp, err)
		}
	}
	return nil
}

func wait(tok paho.Token) error {
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("no answer from the broker in 10s")
	}
	return tok.Error()
}

// Close disconnects; safe twice.
func (d *Device) Close() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.wg.Wait()
	d.cancel = nil
	d.cl.Disconnect(100)
}

// Reports is every update report the device sent, in order.
func (d *Device) Reports() []fleet.UpdateReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reports)
}

// Running is the release the device runs now.
func (d *Device) Running() (uint64, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.RunningSeq, d.RunningVersion
}

// ForgeReports makes the device seal its reports with a key other than
// the one its state announces, as a forger would.
func (d *Device) ForgeReports() {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	d.mu.Lock()
	d.forger = k
	d.mu.Unlock()
}

// PublicKey is the device key its state announces.
func (d *Device) PublicKey() string {
	return fleet.EncodePublicKey(d.priv.Public().(ed25519.PublicKey))
}

func (d *Device) publishState() error {
	d.mu.Lock()
	b := msgp.AppendMapHeader(nil, 8)
	b = msgp.AppendString(b, "online")
	b = msgp.AppendBool(b, true)
	b = msgp.AppendString(b, "boot")
	b = msgp.AppendUint32(b, 1)
	b = msgp.AppendString(b, "version")
	b = msgp.AppendString(b, d.RunningVersion)
	b = msgp.AppendString(b, "time")
	b = msgp.AppendInt64(b, time.Now().UnixMilli())
	b = msgp.AppendString(b, "device_key")
	b = msgp.AppendString(b, fleet.EncodePublicKey(d.priv.Public().(ed25519.PublicKey)))
	b = msgp.AppendString(b, "groups")
	b = msgp.AppendArrayHeader(b, uint32(len(d.Groups)))
	for _, g := range d.Groups {
		b = msgp.AppendString(b, g)
	}
	b = msgp.AppendString(b, "release_seq")
	b = msgp.AppendUint64(b, d.RunningSeq)
	b = msgp.AppendString(b, "platform")
	b = msgp.AppendString(b, d.Platform.GOOS+"/"+d.Platform.GOARCH+d.Platform.GOARM)
	d.mu.Unlock()
	return wait(d.cl.Publish(fleet.Prefix(d.Fleet)+d.ID+"/"+fleet.ChannelState, 1, true, b))
}

func (d *Device) report(r fleet.UpdateReport) {
	d.mu.Lock()
	r.Device, r.Fleet, r.Running, r.RunningVersion, r.Time = d.ID, d.Fleet, d.RunningSeq, d.RunningVersion, time.Now().UnixMilli()
	d.reports = append(d.reports, r)
	key := d.priv
	if d.forger != nil {
		key = d.forger
	}
	d.mu.Unlock()
	body, _ := json.Marshal(r)
	p, err := fleet.Seal(signer{key}, d.Fleet, d.ID, fleet.ChannelUpdateReported, body)
	if err != nil {
		return
	}
	_ = wait(d.cl.Publish(fleet.Prefix(d.Fleet)+d.ID+"/"+fleet.ChannelUpdateReported, 1, true, p))
}

func (d *Device) loop(ctx context.Context) {
	defer d.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-d.queue:
			d.handle(ctx, p)
		}
	}
}

func (d *Device) handle(ctx context.Context, payload []byte) {
	r, err := fleet.DecodeRelease(payload)
	if err != nil {
		d.report(fleet.UpdateReport{State: fleet.UpdateRejected, Reason: err.Error()})
		return
	}
	d.mu.Lock()
	seen := d.done[r.Seq]
	running := d.RunningSeq
	d.mu.Unlock()
	if seen {
		return // the same release again (on another scope's topic, or redelivered)
	}
	reject := func(reason string) {
		d.mu.Lock()
		d.done[r.Seq] = true
		d.mu.Unlock()
		d.report(fleet.UpdateReport{Seq: r.Seq, Version: r.Version, State: fleet.UpdateRejected, Reason: reason})
	}
	if !r.Reaches(d.Fleet, d.ID, d.Groups) {
		reject(fmt.Sprintf("release addressed to %s/%s, not to this device", r.Fleet, r.Scope))
		return
	}
	if _, err := d.kr.VerifyRelease(r, 1); err != nil {
		reject(err.Error())
		return
	}
	if err := r.CheckInstall(d.Platform, running, d.SpoolFormat, time.Now()); err != nil {
		reject(err.Error())
		return
	}
	sha, size, isDelta := r.SHA256, r.Size, false
	if r.Delta != nil && d.Base != nil {
		sum := sha256.Sum256(d.Base)
		if hex.EncodeToString(sum[:]) == r.Delta.BaseSHA256 && r.Delta.BaseSeq == running {
			sha, size, isDelta = r.Delta.SHA256, r.Delta.Size, true
		}
	}
	blob, err := d.fetch(ctx, r, sha, size, isDelta)
	end := func(state, reason string) {
		d.mu.Lock()
		d.done[r.Seq] = true
		d.mu.Unlock()
		d.report(fleet.UpdateReport{Seq: r.Seq, Version: r.Version, State: state, Reason: reason, Have: size, Size: size, Delta: isDelta})
	}
	if err != nil {
		end(fleet.UpdateFailed, err.Error())
		return
	}
	d.report(fleet.UpdateReport{Seq: r.Seq, Version: r.Version, State: fleet.UpdateVerifying, Have: size, Size: size, Delta: isDelta})
	bin := blob
	if isDelta {
		if bin, err = delta.Patch(d.Base, blob, r.Size); err != nil {
			end(fleet.UpdateFailed, "delta: "+err.Error())
			return
		}
	}
	if sum := sha256.Sum256(bin); hex.EncodeToString(sum[:]) != r.SHA256 || int64(len(bin)) != r.Size {
		end(fleet.UpdateFailed, fmt.Sprintf("binary sha256 %x (%d bytes) does not match the manifest's %s (%d bytes)", sum, len(bin), r.SHA256, r.Size))
		return
	}
	state, reason := fleet.UpdateGood, ""
	if d.Outcome != nil {
		state, reason = d.Outcome(r, bin)
	}
	if state == fleet.UpdateGood {
		d.mu.Lock()
		d.RunningSeq, d.RunningVersion, d.Base = r.Seq, r.Version, bin
		d.mu.Unlock()
		_ = d.publishState()
	}
	end(state, reason)
}

// fetch gathers the retained chunks of the blob sha (size bytes), reporting
// progress as they arrive.
func (d *Device) fetch(ctx context.Context, r *fleet.Release, sha string, size int64, isDelta bool) ([]byte, error) {
	n := fleet.Chunks(size, r.ChunkSize)
	filter := fleet.ReleaseChunkFilter(d.Fleet, sha)
	d.mu.Lock()
	d.chunks[sha] = map[int][]byte{}
	d.mu.Unlock()
	if err := wait(d.cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		i, err := strconv.Atoi(m.Topic()[strings.LastIndexByte(m.Topic(), '/')+1:])
		if err != nil || i < 0 || i >= n {
			return
		}
		d.mu.Lock()
		if have := d.chunks[sha]; have != nil {
			have[i] = append([]byte(nil), m.Payload()...)
		}
		d.mu.Unlock()
		select {
		case d.notify <- struct{}{}:
		default:
		}
	})); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", filter, err)
	}
	defer d.cl.Unsubscribe(filter)
	deadline := time.After(d.ChunkWait)
	lastReport := -1
	for {
		d.mu.Lock()
		got := len(d.chunks[sha])
		d.mu.Unlock()
		if q := got * 4 / max(n, 1); q != lastReport {
			lastReport = q
			d.report(fleet.UpdateReport{Seq: r.Seq, Version: r.Version, State: fleet.UpdateDownloading,
				Have: min(size, int64(got)*int64(r.ChunkSize)), Size: size, Delta: isDelta})
		}
		if got == n {
			break
		}
		select {
		case <-d.notify:
		case <-deadline:
			return nil, fmt.Errorf("%d of %d chunks of %s arrived in %s", got, n, sha[:12], d.ChunkWait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var buf bytes.Buffer
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < n; i++ {
		c := d.chunks[sha][i]
		want := r.ChunkSize
		if i == n-1 {
			want = int(size - int64(n-1)*int64(r.ChunkSize))
		}
		if len(c) != want {
			return nil, fmt.Errorf("chunk %d of %s is %d bytes, want %d", i, sha[:12], len(c), want)
		}
		buf.Write(c)
	}
	delete(d.chunks, sha)
	return buf.Bytes(), nil
}
