package agent

import (
	"context"
	"os"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"github.com/kestrel-edge/kestrel/transport/mqtt"
)

// LocalStatus is the agent's live state for the local control socket
// (`kestrel status`).
func (a *Agent) LocalStatus() localctl.Status {
	cfg := a.Config()
	now := a.opts.Now()
	m := a.spool.Metrics()
	st := localctl.Status{
		PID: os.Getpid(), Version: a.opts.Version, Device: cfg.Device.ID, Fleet: cfg.Device.Fleet,
		Boot: a.boot, Started: a.started, Now: now, ConfigVersion: cfg.Version,
		Spool: localctl.Spool{
			Health: m.Health.State.String(), Records: m.Records, Bytes: m.Bytes, Max: m.MaxBytes,
			Oldest: m.OldestAge.Seconds(), Writes: m.Writes, Lanes: map[string]int{},
		},
		Broker: localctl.Broker{URLs: mqtt.RedactURLs(cfg.Broker.URLs)},
	}
	for p := kestrel.Priority(0); p < kestrel.NumPriorities; p++ {
		st.Spool.Lanes[p.String()] = m.Lanes[p].Records
	}
	a.mu.Lock()
	sr := a.sess
	names := make(map[string]bool, len(a.srcs))
	for n := range a.srcs {
		names[n] = true
	}
	a.mu.Unlock()
	if sr != nil && sr.sess != nil {
		ss := sr.sess.Stats()
		st.Broker.Connected = sr.sess.Connected()
		st.Broker.Messages, st.Broker.Records = ss.Messages.Load(), ss.Records.Load()
		if ms := ss.LastAck.Load(); ms > 0 {
			t := time.UnixMilli(ms).UTC()
			st.Broker.LastAck = &t
		}
	}

	a.latest.mu.Lock()
	defer a.latest.mu.Unlock()
	if g := a.latest.gps; g != nil || a.latest.fix != nil {
		st.GPS = &localctl.GPS{State: "no status yet"}
		if g != nil {
			st.GPS.State, st.GPS.Mode = g.State.String(), int(g.Mode)
			st.GPS.SatsUsed, st.GPS.SatsInView = int(g.SatsUsed), int(g.SatsInView)
			st.GPS.HDOP = float64(g.HDOP) / 100
			st.GPS.Sentences, st.GPS.BadFrames = g.Sentences, g.BadFrames
		}
		if f := a.latest.fix; f != nil {
			t := time.UnixMilli(a.latest.fixTime).UTC()
			st.GPS.LastFix = &t
			st.GPS.Lat, st.GPS.Lon = float64(f.Lat)/1e7, float64(f.Lon)/1e7
		}
	}
	if r := a.latest.radio; r != nil {
		st.Radio = &localctl.Radio{Profile: r.Profile.String(), Online: r.Online, Registered: r.Registered.String(),
			RSSI: int(r.RSSI), RSRP: int(r.RSRP), Operator: r.Operator}
	}
	// A part's state says only what is known: "started" is a supervised
	// source (which may be waiting for its device), refined by what the
	// part itself last reported.
	part := func(name, dev, seen string) {
		if dev == "" {
			return
		}
		state := "stopped"
		if names[name] {
			state = "started"
			if seen != "" {
				state += ": " + seen
			}
		}
		st.Parts = append(st.Parts, localctl.Part{Name: name, Device: dev, State: state})
	}
	gpsSeen, radioSeen := "", ""
	if g := a.latest.gps; g != nil {
		gpsSeen = g.State.String()
	}
	if r := a.latest.radio; r != nil {
		radioSeen = map[bool]string{true: "answering", false: "not answering"}[r.Online]
	}
	part("gps", cfg.GPS.Port, gpsSeen)
	part("radio", cfg.Radio.Port, radioSeen)
	part("firmware", cfg.Hooks.Socket, a.latest.caps["firmware_socket"])
	st.Capabilities = make(map[string]string, len(a.latest.caps))
	for k, v := range a.latest.caps {
		st.Capabilities[k] = v
	}
	return st
}

// serveLocal runs the local control socket until ctx ends. A socket that
// cannot be created is logged, not fatal: the agent's job is the data.
func (a *Agent) serveLocal(ctx context.Context, path string) {
	if path == "" {
		return
	}
	srv, err := localctl.Listen(path, a.LocalStatus, a.log)
	if err != nil {
		a.log.Warn("local control socket unavailable: kestrel status will not reach this agent", "err", err)
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		srv.Run(ctx)
	}()
}
