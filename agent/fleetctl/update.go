package fleetctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
	"github.com/kestrel-edge/kestrel/transport/fleet"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// Updater is the device's A/B updater (agent/update.Updater) as the
// controller drives it: the controller verifies manifests and moves the
// chunks; the updater stores, checks the hash, switches and counts starts.
type Updater interface {
	RunningSeq() uint64
	RunningSHA256() string
	WasReverted(sha256 string) bool
	// Stage begins, or resumes, the download of a verified manifest.
	Stage(r *fleet.Release, raw []byte) error
	StagingSHA256() string
	// StagingBlobSHA256 names the chunks being fetched: the binary's
	// hash, or its delta's.
	StagingBlobSHA256() string
	Next() (int, bool)
	Write(index int, data []byte) error
	// Finish verifies the download, records it pending verify and
	// switches the current link to it.
	Finish() error
	Abort(state, reason string) error
	// PendingSeq: this process is a pending release's first start.
	PendingSeq() (uint64, bool)
	MarkGood() error
	Revert(reason string) (restart bool, err error)
	Reject(seq uint64, version, reason string) error
	Report() (r fleet.UpdateReport, final bool)
	MarkReported() error
}

// Unsubscriber is a Messenger that can drop a topic filter: release chunks
// are fetched one subscription at a time.
type Unsubscriber interface {
	Unsubscribe(topic string) error
}

// Idler is a door that says when its outbox has no backlog: chunks move
// only then (live traffic and a draining backlog first).
type Idler interface {
	OutboxIdle() bool
}

// Link-profile download rates (bytes/s) when update.rate is 0.
var profileRate = map[string]int{mqtt.ProfileLTE.Name: 256 << 10, mqtt.ProfileNarrowband.Name: 1 << 10}

// chunkTimeout: a chunk not delivered within this long is asked for again
// later (the broker may not hold it yet, or the link dropped).
const chunkTimeout = 30 * time.Second

// progressEvery: how often a download's progress is reported.
const progressEvery = 10 * time.Second

type releaseCand struct {
	rel *fleet.Release
	raw []byte
}

type updateState struct {
	mu        sync.Mutex
	cands     map[string]*releaseCand // scope → accepted manifest
	seen      map[string]string       // scope → digest of the last manifest handled
	wake      chan struct{}
	gateStart time.Time
	lastProg  time.Time
	// Fetched counts chunks written since start (tests, docs/ota.md).
	fetched int
}

// ChunksFetched is how many release chunks this process fetched and
// stored (tests count a resumed download's with it).
func (m *Manager) ChunksFetched() int {
	m.upd.mu.Lock()
	defer m.upd.mu.Unlock()
	return m.upd.fetched
}

func (m *Manager) updateTopics() []string {
	if m.opts.Updater == nil {
		return nil
	}
	t := []string{fleet.Device(m.fleet, m.dev).UpdateTopic(), fleet.AllDevices(m.fleet).UpdateTopic()}
	for _, g := range m.groups(m.current()) {
		t = append(t, fleet.Group(m.fleet, g).UpdateTopic())
	}
	return t
}

// updateScope maps a topic (without the fleet prefix) to its scope.
func (m *Manager) updateScope(rest string) (string, bool) {
	suffix := "/" + fleet.ChannelUpdateDesired
	switch {
	case rest == m.dev+suffix:
		return "device/" + m.dev, true
	case rest == "_all"+suffix:
		return "all", true
	case strings.HasPrefix(rest, "_group/") && strings.HasSuffix(rest, suffix):
		g := strings.TrimSuffix(strings.TrimPrefix(rest, "_group/"), suffix)
		m.mu.Lock()
		member := slices.Contains(m.groups(m.current()), g)
		m.mu.Unlock()
		return "group/" + g, member
	}
	return "", false
}

// handleRelease verifies one manifest from update/desired, refuses and
// audits what may not be installed, and picks the most specific accepted
// release (device, then group, then fleet) to download.
func (m *Manager) handleRelease(scope string, payload []byte) {
	u := m.opts.Updater
	m.upd.mu.Lock()
	if len(payload) == 0 {
		// A cleared retained topic: the release is withdrawn. A
		// download of it stops unless another scope still names it.
		delete(m.upd.cands, scope)
		delete(m.upd.seen, scope)
		c := m.chosenLocked()
		m.upd.mu.Unlock()
		if sha := u.StagingSHA256(); sha != "" && (c == nil || c.rel.SHA256 != sha) {
			if err := u.Abort(fleet.UpdateRejected, "release withdrawn: "+scope+" update/desired cleared"); err != nil {
				m.log.Error("dropping a withdrawn download", "err", err)
			}
			m.updateReport()
			m.chooseRelease()
		}
		return
	}
	d := digest(payload)
	if m.upd.seen[scope] == d {
		m.upd.mu.Unlock()
		return // the retained copy again, after a reconnect
	}
	m.upd.seen[scope] = d
	m.upd.mu.Unlock()

	m.mu.Lock()
	keys := m.keys
	cur := m.current()
	m.mu.Unlock()
	entry := fleet.AuditEntry{Kind: "update", Scope: scope}
	refuse := func(rel *fleet.Release, err error, report bool) {
		var seq uint64
		var version string
		if rel != nil {
			seq, version = rel.Seq, rel.Version
		}
		entry.Version, entry.Result, entry.Error = seq, fleet.StatusRejected, err.Error()
		m.log.Warn("release refused", "scope", scope, "seq", seq, "version", version, "err", err)
		m.mu.Lock()
		m.audit(entry)
		m.mu.Unlock()
		if report {
			if rerr := u.Reject(seq, version, err.Error()); rerr != nil {
				m.log.Error("recording a refused release", "err", rerr)
			}
			m.updateReport()
		}
	}
	rel, err := fleet.DecodeRelease(payload)
	if err != nil {
		refuse(nil, err, true)
		return
	}
	entry.KeyID = rel.KeyID
	signers, err := keys.VerifyRelease(rel, max(1, cur.Remote.ReleaseThreshold))
	if err != nil {
		refuse(rel, err, true)
		return
	}
	entry.Verified, entry.Signers, entry.KeyID = true, signers, signers[0]
	// A staged rollout publishes a group's or the fleet's manifest,
	// unchanged, on the device's own topic: what counts is that the
	// manifest's target reaches this device (docs/ota-operator.md).
	m.mu.Lock()
	groups := m.groups(m.current())
	m.mu.Unlock()
	if !rel.Reaches(m.fleet, m.dev, groups) {
		refuse(rel, fmt.Errorf("%w: signed for %s, which does not reach %s (groups %v); arrived on %s", fleet.ErrWrongTarget, rel.Target(), m.dev, groups, fleet.Target{Fleet: m.fleet, Scope: scope}), true)
		return
	}
	if rel.SHA256 == u.RunningSHA256() {
		return // the release in force: its manifest stays retained
	}
	if seq, ok := u.PendingSeq(); ok && seq == rel.Seq {
		return
	}
	if last, _ := u.Report(); last.Seq == rel.Seq && finished(last.State) {
		// The same release again (a staged copy on another topic):
		// finished with, so nothing new to report.
		m.log.Info("release already finished with here", "seq", rel.Seq, "state", last.State)
		return
	}
	if u.WasReverted(rel.SHA256) {
		refuse(rel, fmt.Errorf("release %d (%s) failed its health gate on this device before", rel.Seq, rel.Version), false)
		return
	}
	if maxMsg := cur.Remote.MaxMessage; maxMsg > 0 && rel.ChunkSize > maxMsg {
		refuse(rel, fmt.Errorf("chunk_size %d exceeds remote.max_message %d", rel.ChunkSize, maxMsg), true)
		return
	}
	if err := rel.CheckInstall(m.opts.Platform, u.RunningSeq(), m.opts.SpoolFormat, m.now()); err != nil {
		refuse(rel, err, true)
		return
	}
	entry.Version, entry.Result = rel.Seq, "accepted"
	m.mu.Lock()
	m.audit(entry)
	m.mu.Unlock()
	m.log.Info("release accepted", "scope", scope, "seq", rel.Seq, "version", rel.Version, "kid", entry.KeyID)
	m.upd.mu.Lock()
	m.upd.cands[scope] = &releaseCand{rel: rel, raw: slices.Clone(payload)}
	m.upd.mu.Unlock()
	m.chooseRelease()
}

// finished: a release in this state is done with on this device.
func finished(state string) bool {
	switch state {
	case fleet.UpdateGood, fleet.UpdateRejected, fleet.UpdateFailed, fleet.UpdateReverted:
		return true
	}
	return false
}

// chosen is the most specific accepted release. Callers hold m.upd.mu.
func (m *Manager) chosenLocked() *releaseCand {
	if c := m.upd.cands["device/"+m.dev]; c != nil {
		return c
	}
	m.mu.Lock()
	groups := m.groups(m.current())
	m.mu.Unlock()
	for _, g := range groups {
		if c := m.upd.cands["group/"+g]; c != nil {
			return c
		}
	}
	return m.upd.cands["all"]
}

// chooseRelease starts (or resumes) the download of the chosen release.
func (m *Manager) chooseRelease() {
	u := m.opts.Updater
	m.upd.mu.Lock()
	c := m.chosenLocked()
	m.upd.mu.Unlock()
	if c == nil {
		return
	}
	if _, pending := u.PendingSeq(); pending {
		return
	}
	resume := u.StagingSHA256() == c.rel.SHA256
	// Stage resumes a download of the same binary (after a restart: it
	// reopens the partial file) and replaces any other.
	if err := u.Stage(c.rel, c.raw); err != nil {
		m.log.Error("staging a release", "seq", c.rel.Seq, "err", err)
		return
	}
	if resume {
		r, _ := u.Report()
		m.log.Info("resuming a release download", "seq", c.rel.Seq, "have", r.Have, "size", r.Size)
	}
	m.updateReport()
	m.wakeFetcher()
}

func (m *Manager) wakeFetcher() {
	select {
	case m.upd.wake <- struct{}{}:
	default:
	}
}

// updateReport queues the retained update/reported message. A final
// result is marked reported once the broker has it.
func (m *Manager) updateReport() {
	r, final := m.opts.Updater.Report()
	r.Device, r.Fleet, r.Time = m.dev, m.fleet, m.now().UnixMilli()
	b, _ := json.Marshal(&r)
	it := outItem{channel: fleet.ChannelUpdateReported, payload: b, retained: true}
	if final {
		it.sent = func() {
			if err := m.opts.Updater.MarkReported(); err != nil {
				m.log.Error("recording an update report sent", "err", err)
			}
		}
	}
	m.enqueue(it)
}

// fetcher moves the chosen release's chunks, one retained chunk topic at
// a time, while the outbox is idle, at the link's pace; then has the
// updater verify and switch, and asks for a restart.
func (m *Manager) fetcher(ctx context.Context) {
	u := m.opts.Updater
	un, ok := m.msg.(Unsubscriber)
	if !ok {
		m.log.Warn("updates disabled: the messenger cannot unsubscribe (release chunks need it)")
		return
	}
	chunk := make(chan []byte, 1)
	httpsFailed := map[string]int{}
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-m.upd.wake:
		case <-t.C:
		}
		return true
	}
	for ctx.Err() == nil {
		cfg := m.Config()
		if !cfg.Update.Enabled {
			if !wait(5 * time.Second) {
				return
			}
			continue
		}
		if _, pending := u.PendingSeq(); pending {
			if !wait(time.Second) {
				return
			}
			continue
		}
		sha := u.StagingSHA256()
		m.upd.mu.Lock()
		c := m.chosenLocked()
		m.upd.mu.Unlock()
		if sha == "" || c == nil || c.rel.SHA256 != sha {
			// Nothing to fetch, or a download resumed after a restart
			// whose manifest has not arrived again yet.
			if !wait(time.Second) {
				return
			}
			continue
		}
		if m.now().UnixMilli() >= c.rel.Expires {
			_ = u.Abort(fleet.UpdateFailed, fmt.Sprintf("%v during the download", fleet.ErrReleaseExpired))
			m.updateReport()
			continue
		}
		rate := cfg.Update.Rate
		if rate <= 0 {
			rate = profileRate[cfg.Broker.Profile]
		}
		blob := u.StagingBlobSHA256()
		if c.rel.URL != "" && blob == sha && m.opts.HTTPClient != nil && httpsFailed[sha] < httpsAttempts {
			if _, more := u.Next(); more && m.sessionIdle() {
				if err := m.fetchHTTPS(ctx, c, rate); err != nil && ctx.Err() == nil {
					httpsFailed[sha]++
					m.log.Warn("release download over https failed", "url", c.rel.URL, "attempt", httpsFailed[sha], "err", err)
					if httpsFailed[sha] >= httpsAttempts {
						m.log.Warn("release URL given up: fetching the chunks over MQTT", "url", c.rel.URL)
					}
					if !wait(2 * time.Second) {
						return
					}
				}
				continue
			}
		}
		i, more := u.Next()
		if !more {
			m.finishRelease(c)
			continue
		}
		if !m.sessionIdle() {
			if !wait(500 * time.Millisecond) {
				return
			}
			continue
		}
		topic := fleet.ReleaseChunkTopic(m.fleet, blob, i)
		start := time.Now()
		err := m.msg.Subscribe(topic, func(t string, p []byte) {
			if t != topic {
				return
			}
			select {
			case chunk <- p:
			default:
			}
		})
		var data []byte
		if err == nil {
			t := time.NewTimer(chunkTimeout)
			select {
			case data = <-chunk:
			case <-t.C:
				err = fmt.Errorf("chunk %d not delivered within %s", i, chunkTimeout)
			case <-ctx.Done():
			}
			t.Stop()
		}
		if uerr := un.Unsubscribe(topic); uerr != nil {
			m.log.Debug("unsubscribe chunk", "topic", topic, "err", uerr)
		}
		select { // a duplicate delivery
		case <-chunk:
		default:
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = u.Write(i, data)
		}
		if err != nil {
			m.log.Warn("release chunk", "index", i, "err", err)
			if !wait(2 * time.Second) {
				return
			}
			continue
		}
		if !m.chunkStored(ctx, len(data), rate, start) {
			return
		}
	}
}

// chunkStored counts a chunk of n bytes stored, reports progress every
// progressEvery, and waits out the link's pace (rate bytes/s, the chunk's
// fetch begun at since). It returns false when ctx ended.
func (m *Manager) chunkStored(ctx context.Context, n, rate int, since time.Time) bool {
	m.upd.mu.Lock()
	m.upd.fetched++
	prog := m.now().Sub(m.upd.lastProg) >= progressEvery
	if prog {
		m.upd.lastProg = m.now()
	}
	m.upd.mu.Unlock()
	if prog {
		m.updateReport()
	}
	if rate <= 0 {
		return ctx.Err() == nil
	}
	d := time.Duration(float64(n)/float64(rate)*float64(time.Second)) - time.Since(since)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sessionIdle: connected, and the door's outbox has no backlog.
func (m *Manager) sessionIdle() bool {
	if m.opts.Connected != nil && !m.opts.Connected() {
		return false
	}
	m.mu.Lock()
	door := m.door
	m.mu.Unlock()
	if i, ok := door.(Idler); ok {
		return i.OutboxIdle()
	}
	return true
}

// Config is the config in force.
func (m *Manager) Config() config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current()
}

func (m *Manager) finishRelease(c *releaseCand) {
	u := m.opts.Updater
	entry := fleet.AuditEntry{Kind: "update", Version: c.rel.Seq, KeyID: c.rel.KeyID, Scope: c.rel.Scope}
	if err := u.Finish(); err != nil {
		if errors.Is(err, fleet.ErrDeltaFailed) {
			m.log.Warn("release delta did not apply: fetching the whole binary", "seq", c.rel.Seq, "err", err)
			m.chooseRelease()
			return
		}
		entry.Result, entry.Error = fleet.UpdateFailed, err.Error()
		m.log.Error("release failed verification", "seq", c.rel.Seq, "err", err)
		m.mu.Lock()
		m.audit(entry)
		m.mu.Unlock()
		m.updateReport()
		m.upd.mu.Lock()
		for s, x := range m.upd.cands {
			if x == c {
				delete(m.upd.cands, s) // not again until it is pushed again
			}
		}
		m.upd.mu.Unlock()
		return
	}
	entry.Result = fleet.UpdateStaged
	m.log.Warn("release staged and switched to: restarting into it", "seq", c.rel.Seq, "version", c.rel.Version, "chunks_fetched", m.ChunksFetched())
	m.mu.Lock()
	m.audit(entry)
	m.mu.Unlock()
	m.updateReport()
	m.restartSoon()
}

// restartSoon asks the agent to exit once the queued reports are out (or
// after 5 s), for the service manager to start the current slot.
func (m *Manager) restartSoon() {
	if m.opts.Restart == nil {
		m.log.Error("no restart hook: the new release runs at the next start")
		return
	}
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			m.outMu.Lock()
			n := len(m.out)
			m.outMu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		m.opts.Restart()
	}()
}

// gateTick runs a pending release's health gate: the broker reached (a
// publish acknowledged since the start), the GPS's sentences if a GPS is
// configured, the spool open (the agent is attached: agent.New opened
// it). Passed: the release is good. Not within update.health_timeout: it
// is reverted and the agent exits for the old binary to start.
func (m *Manager) gateTick() {
	u := m.opts.Updater
	if u == nil {
		return
	}
	seq, ok := u.PendingSeq()
	if !ok {
		return
	}
	m.mu.Lock()
	cur := m.current()
	since := m.upd.gateStart
	var unmet []string
	connected := m.opts.Connected == nil || m.opts.Connected()
	if !connected || !time.Unix(0, m.lastPubOK.Load()).After(since) {
		unmet = append(unmet, fmt.Sprintf("broker %s not reached", strings.Join(cur.Broker.URLs, ",")))
	}
	if v, ok := m.vitals(); ok && cur.GPS.Port != "" && v.LastSign("gps").Before(since) {
		unmet = append(unmet, fmt.Sprintf("gps %s sent no valid NMEA sentence", cur.GPS.Port))
	}
	if m.door == nil {
		unmet = append(unmet, "agent not started (spool)")
	}
	m.mu.Unlock()
	entry := fleet.AuditEntry{Kind: "update", Version: seq}
	if len(unmet) == 0 {
		if err := u.MarkGood(); err != nil {
			m.log.Error("marking the release good", "err", err)
			return
		}
		m.log.Info("release passed its health gate: marked good", "seq", seq)
		entry.Result = fleet.UpdateGood
		m.mu.Lock()
		m.audit(entry)
		m.mu.Unlock()
		m.updateReport()
		return
	}
	timeout := cur.Update.HealthTimeout.Duration
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if m.now().Sub(since) < timeout {
		return
	}
	reason := fmt.Sprintf("health gate not passed within %s: %s", timeout, strings.Join(unmet, ", "))
	restart, err := u.Revert(reason)
	if err != nil {
		m.log.Error("reverting the release", "err", err)
		return
	}
	entry.Result, entry.Error = fleet.UpdateReverted, reason
	m.mu.Lock()
	m.audit(entry)
	m.mu.Unlock()
	m.updateReport()
	if restart {
		m.restartSoon()
	}
}

// httpsAttempts: a release URL that fails this often is given up for the
// chunks on MQTT (until the next start).
const httpsAttempts = 3

// fetchHTTPS downloads what is missing of the release from its https://
// URL (the LTE-rich alternative to the chunks), one chunk-sized piece at a
// time into the same partial file, from the first missing chunk on (a
// Range request), at the link's pace. The body is bounded by the
// manifest's size; the hash is checked by Finish as for chunks.
func (m *Manager) fetchHTTPS(ctx context.Context, c *releaseCand, rate int) error {
	u := m.opts.Updater
	first, more := u.Next()
	if !more {
		return nil
	}
	cs := int64(c.rel.ChunkSize)
	off := int64(first) * cs
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.rel.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	resp, err := m.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	start := int64(0)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start = off
	case http.StatusOK:
	default:
		return fmt.Errorf("GET %s: %s", c.rel.URL, resp.Status)
	}
	body := io.LimitReader(resp.Body, c.rel.Size-start)
	if _, err := io.CopyN(io.Discard, body, off-start); err != nil {
		return fmt.Errorf("GET %s: %w", c.rel.URL, err)
	}
	buf := make([]byte, cs)
	for i := first; int64(i)*cs < c.rel.Size; i++ {
		n := min(cs, c.rel.Size-int64(i)*cs)
		t0 := time.Now()
		if _, err := io.ReadFull(body, buf[:n]); err != nil {
			return fmt.Errorf("GET %s: chunk %d: %w", c.rel.URL, i, err)
		}
		if err := u.Write(i, buf[:n]); err != nil {
			return err
		}
		if !m.chunkStored(ctx, int(n), rate, t0) {
			return ctx.Err()
		}
		for !m.sessionIdle() { // live traffic first, as for chunks
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}
