package fleetctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// commandTimeout bounds one handler run.
const commandTimeout = 2 * time.Minute

// handleCommand verifies a command, checks freshness and replay, audits it,
// runs its handler in its own goroutine and publishes the reply.
func (m *Manager) handleCommand(ctx context.Context, payload []byte) {
	entry := fleet.AuditEntry{Kind: "command"}
	cmd, err := fleet.DecodeCommand(payload)
	if err != nil {
		// Answer on the default reply channel if the request id is legible,
		// so the sender learns why.
		var partial struct {
			ID    string `json:"id"`
			Reply string `json:"reply"`
		}
		_ = json.Unmarshal(payload, &partial)
		if len(partial.ID) > fleet.MaxIDLen {
			partial.ID = partial.ID[:fleet.MaxIDLen]
		}
		entry.ID = partial.ID
		m.junkCommand(entry, "reply", err)
		return
	}
	entry.ID, entry.Name, entry.KeyID = cmd.ID, cmd.Name, cmd.KeyID
	entry.Args = auditArgs(cmd.Args)
	m.mu.Lock()
	keys, requireSigned := m.keys, m.base.Remote.RequireSigned
	threshold := m.current().Remote.CommandThreshold
	maxAge := m.opts.CommandMaxAge
	if maxAge <= 0 {
		maxAge = m.current().Remote.CommandMaxAge.Duration
	}
	if maxAge <= 0 {
		maxAge = 5 * time.Minute
	}
	m.mu.Unlock()
	signers, err := keys.VerifyCommandN(cmd, requireSigned, threshold)
	if err != nil {
		m.junkCommand(entry, cmd.Reply, err)
		return
	}
	entry.Verified, entry.Signers = len(signers) > 0, signers
	entry.By = auditBy(signers)
	if len(signers) > 0 {
		entry.KeyID = signers[0]
	}
	if cmd.Fleet != m.fleet || cmd.Device != m.dev {
		m.rejectCommand(entry, cmd.Reply, fmt.Errorf("%w: for %s/%s", fleet.ErrWrongTarget, cmd.Fleet, cmd.Device))
		return
	}
	now := m.now()
	issued := time.UnixMilli(cmd.Issued)
	if age := now.Sub(issued); age > maxAge || age < -maxAge {
		m.rejectCommand(entry, cmd.Reply, fmt.Errorf("%w: issued %s, device clock %s, window ±%s",
			fleet.ErrExpired, issued.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), maxAge))
		return
	}
	m.mu.Lock()
	if _, seen := m.st.Commands[cmd.ID]; seen {
		m.mu.Unlock()
		m.rejectCommand(entry, cmd.Reply, fmt.Errorf("%w: %q", fleet.ErrReplayedCmd, cmd.ID))
		return
	}
	// Ids older than the window can go: freshness rejects their replays.
	for id, t := range m.st.Commands {
		if now.Sub(time.UnixMilli(t)) > 2*maxAge {
			delete(m.st.Commands, id)
		}
	}
	m.st.Commands[cmd.ID] = cmd.Issued
	m.saveLocked() // before running it: a replay after a crash must still fail
	m.mu.Unlock()

	h := m.handler(cmd.Name)
	if h == nil {
		m.rejectCommand(entry, cmd.Reply, fmt.Errorf("%w: %q", fleet.ErrUnknownCommand, cmd.Name))
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		hctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		res, err := h(hctx, cmd.Args)
		var then func()
		if d, ok := res.(Deferred); ok {
			res, then = d.Result, d.Then
		}
		r := fleet.Reply{ID: cmd.ID, Name: cmd.Name, Status: fleet.ReplyOK}
		entry.Result = fleet.ReplyOK
		if err != nil {
			r.Status, r.Error = fleet.ReplyError, err.Error()
			entry.Result, entry.Error = fleet.ReplyError, err.Error()
		} else if res != nil {
			b, merr := json.Marshal(res)
			if merr != nil {
				r.Status, r.Error = fleet.ReplyError, "result: "+merr.Error()
			} else {
				r.Result = b
			}
		}
		m.log.Info("command", "name", cmd.Name, "id", cmd.ID, "kid", cmd.KeyID, "status", r.Status, "err", r.Error)
		done := make(chan struct{})
		m.mu.Lock()
		m.audit(entry)
		m.reply(cmd.Reply, r, func() { close(done) })
		m.mu.Unlock()
		if then != nil {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			case <-ctx.Done():
				return
			}
			then()
		}
	}()
}

func (m *Manager) rejectCommand(entry fleet.AuditEntry, replyCh string, err error) {
	entry.Result, entry.Error = fleet.ReplyRejected, err.Error()
	m.log.Warn("command rejected", "name", entry.Name, "id", entry.ID, "kid", entry.KeyID, "err", err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit(entry)
	if entry.ID == "" {
		return // nothing the sender could match a reply to
	}
	if fleet.CheckReplyChannel(replyCh) != nil {
		replyCh = "reply"
	}
	m.reply(replyCh, fleet.Reply{ID: entry.ID, Name: entry.Name, Status: fleet.ReplyRejected, Error: err.Error()}, nil)
}

// junkCommand refuses an unverified command: counted in the junk summary,
// not audited one by one, and answered only while the publish queue is
// nearly empty, so a flood can neither push real entries out of the audit
// log nor real reports and replies out of the queue.
func (m *Manager) junkCommand(entry fleet.AuditEntry, replyCh string, err error) {
	m.log.Debug("unverified command refused", "id", entry.ID, "err", err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.junk(err)
	if entry.ID == "" {
		return
	}
	if fleet.CheckReplyChannel(replyCh) != nil {
		replyCh = "reply"
	}
	m.outMu.Lock()
	room := len(m.out) < maxOut/16
	m.outMu.Unlock()
	if room {
		m.reply(replyCh, fleet.Reply{ID: entry.ID, Name: entry.Name, Status: fleet.ReplyRejected, Error: err.Error()}, nil)
	}
}

// junkReason names an unverified message's fault for the summary.
func junkReason(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{{fleet.ErrThreshold, "below_threshold"}, {fleet.ErrTooLarge, "too_large"}, {fleet.ErrMalformed, "malformed"}, {fleet.ErrUnsigned, "unsigned"},
		{fleet.ErrUntrustedKey, "untrusted_key"}, {fleet.ErrBadSignature, "bad_signature"}} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

// junk counts one unverified message. Callers hold m.mu.
func (m *Manager) junk(err error) {
	m.junkN(junkReason(err), 1)
}

func (m *Manager) junkN(reason string, n uint64) {
	j := &m.st.Junk
	now := m.now().UnixMilli()
	if j.Count == 0 {
		j.First = now
	}
	j.Count += n
	j.Last = now
	if j.Reasons == nil {
		j.Reasons = map[string]uint64{}
	}
	j.Reasons[reason] += n
	m.dirty = true
}

// junkPeriod is how often a changed junk summary is published.
const junkPeriod = 10 * time.Second

// publishJunk queues the junk summary if it changed and junkPeriod has
// passed. Callers hold m.mu.
func (m *Manager) publishJunk(force bool) {
	j := &m.st.Junk
	if j.Count == j.Published || (!force && m.now().Sub(m.junkSent) < junkPeriod) {
		return
	}
	j.Published, m.junkSent = j.Count, m.now()
	e := fleet.AuditEntry{Kind: "junk", Time: j.Last, Result: fleet.StatusRejected, Count: j.Count, Reasons: maps.Clone(j.Reasons),
		Error: fmt.Sprintf("%d unverified messages refused since %s", j.Count, time.UnixMilli(j.First).UTC().Format(time.RFC3339))}
	b, _ := json.Marshal(&e)
	m.enqueue(outItem{channel: "audit", payload: b})
}

// JunkCount is how many unverified messages were refused (tests, state).
func (m *Manager) JunkCount() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Junk.Count
}

// reply queues a reply. Callers hold m.mu.
func (m *Manager) reply(ch string, r fleet.Reply, sent func()) {
	r.Device = m.dev
	r.Time = m.now().UnixMilli()
	b, _ := json.Marshal(&r)
	m.enqueue(outItem{channel: ch, payload: b, sent: sent})
}

func (m *Manager) handler(name string) CommandFunc {
	if h, ok := m.opts.Commands[name]; ok && h != nil {
		return h
	}
	if name == "privacy" && m.opts.Privacy != nil {
		return m.privacyCommand
	}
	return nil
}

// privacyCommand: args mode=on|off|default. "on" selects privacy.on_mode,
// "default" returns to privacy.mode. The override survives restarts.
func (m *Manager) privacyCommand(_ context.Context, args map[string]string) (any, error) {
	p := m.opts.Privacy
	var mode string
	switch args["mode"] {
	case "on":
		mode = p.SetPrivacy(true)
	case "off":
		mode = p.SetPrivacy(false)
	case "default":
		mode = p.ClearPrivacy()
	default:
		return nil, fmt.Errorf("privacy: want mode=on, off or default, got %q", args["mode"])
	}
	if pp, ok := p.(PrivacyPersister); ok {
		m.mu.Lock()
		m.st.Privacy = pp.PrivacyOverride()
		m.saveLocked()
		m.mu.Unlock()
	}
	return map[string]string{"privacy": mode}, nil
}

// maxOut bounds the publish queue while offline; the oldest entries go
// first (the audit log keeps them on the device).
const maxOut = 512

func (m *Manager) enqueue(it outItem) {
	m.outMu.Lock()
	m.out = append(m.out, it)
	if len(m.out) > maxOut {
		m.out = m.out[len(m.out)-maxOut:]
	}
	m.outMu.Unlock()
	m.wakePublisher()
}

func (m *Manager) wakePublisher() {
	select {
	case m.outWake <- struct{}{}:
	default:
	}
}

// seal signs config reports, command replies and audit entries with the
// device key, at publish time (a report persisted before a restart is
// signed as it goes out).
func (m *Manager) seal(it outItem) ([]byte, error) {
	m.mu.Lock()
	s := m.opts.Signer
	m.mu.Unlock()
	if s == nil || !(it.channel == fleet.ChannelReported || it.channel == fleet.ChannelAudit || fleet.CheckReplyChannel(it.channel) == nil) {
		return it.payload, nil
	}
	return fleet.Seal(s, m.fleet, m.dev, it.channel, it.payload)
}

// publisher sends queued reports, replies and audit entries in order,
// retrying with backoff while the broker is unreachable.
func (m *Manager) publisher(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for {
		m.mu.Lock()
		msg := m.msg
		m.mu.Unlock()
		// The audit chain's unsent entries first, from the state file
		// (they survive a restart and a full queue), then the queue.
		it, have := m.nextAudit()
		have = have && msg != nil
		if !have {
			m.outMu.Lock()
			have = len(m.out) > 0 && msg != nil
			if have {
				it = m.out[0]
			}
			m.outMu.Unlock()
		}
		if !have {
			select {
			case <-ctx.Done():
				return
			case <-m.outWake:
			}
			continue
		}
		payload, err := m.seal(it)
		if err != nil {
			m.log.Error("signing a device message", "channel", it.channel, "err", err)
			payload = it.payload
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = msg.Publish(pctx, it.channel, payload, it.retained)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Debug("remote publish failed; will retry", "channel", it.channel, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		m.lastPubOK.Store(m.now().UnixNano())
		if it.auditSeq > 0 {
			m.auditPublished(it.auditSeq)
		} else {
			m.outMu.Lock()
			if len(m.out) > 0 && &m.out[0].payload[0] == &it.payload[0] {
				m.out = m.out[1:]
			}
			m.outMu.Unlock()
		}
		if it.sent != nil {
			it.sent()
		}
	}
}
