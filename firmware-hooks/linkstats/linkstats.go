// Package linkstats reports traffic per network interface as
// kestrel.LinkUsage records: bytes, packets and drops over each period.
//
// Where the kernel allows it, the counts come from eBPF programs on the
// net:net_dev_xmit and net:netif_receive_skb tracepoints (linkstats.c);
// otherwise (32-bit ARM, old kernels, no CAP_BPF, no tracefs) from
// /proc/net/dev, the same counters `ip -s link` shows. Mode says which, and
// Reason says why eBPF was refused.
//
// The two sources count slightly differently; docs/hooks.md has the detail:
//   - eBPF tx bytes include the link-layer header, rx bytes start at the
//     network header (the tracepoint sees the skb after eth_type_trans);
//     /proc/net/dev includes the link-layer header both ways on Ethernet.
//   - eBPF drops are transmit failures (rc other than NETDEV_TX_OK or
//     NETDEV_TX_BUSY); procfs drops are the driver's rx+tx drop counters.
//   - The tracepoints fire in every network namespace and the map is keyed
//     by interface name: names absent from the agent's namespace are pruned
//     at each read, but a container's eth0 adds to the host's eth0.
package linkstats

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// ErrUnavailable is wrapped by Reason when eBPF was refused.
var ErrUnavailable = probe.ErrUnavailable

// ErrUnsupported is the cause on architectures without eBPF support.
var ErrUnsupported = probe.ErrUnsupported

// Modes returned by Source.Mode, also the LinkUsage.Source of each record.
const (
	ModeEBPF   = "ebpf"
	ModeProcfs = "procfs"
)

// DefaultPeriod is used when Options.Period is zero.
const DefaultPeriod = time.Minute

// Options configure a Source.
type Options struct {
	// Period between reports; DefaultPeriod when zero.
	Period time.Duration
	// Ifaces limits the report to these interface names. Empty means every
	// interface except the loopback "lo".
	Ifaces []string
	// ProcRoot is where /proc is mounted ("/proc" when empty); tests point
	// it at a fake tree.
	ProcRoot string
	// ProcfsOnly skips the eBPF probe (config hooks.ebpf = false).
	ProcfsOnly bool
	Logger     *slog.Logger
}

// counters are cumulative totals for one interface.
type counters struct {
	RxBytes, RxPackets, TxBytes, TxPackets, Drops uint64
}

// sub returns c - prev, taking a counter that went backwards (interface
// re-created, driver reset, eBPF map entry recreated) as restarted from zero.
func (c counters) sub(prev counters) counters {
	if c.RxBytes < prev.RxBytes || c.RxPackets < prev.RxPackets || c.TxBytes < prev.TxBytes ||
		c.TxPackets < prev.TxPackets || c.Drops < prev.Drops {
		return c
	}
	return counters{c.RxBytes - prev.RxBytes, c.RxPackets - prev.RxPackets,
		c.TxBytes - prev.TxBytes, c.TxPackets - prev.TxPackets, c.Drops - prev.Drops}
}

// counterReader is where cumulative counts come from.
type counterReader interface {
	read() (map[string]counters, error)
	Close() error
}

// Source produces LinkUsage records.
type Source struct {
	opts   Options
	log    *slog.Logger
	mode   string
	reason error
	r      counterReader
	want   map[string]bool
}

// New probes eBPF (load and attach) and falls back to /proc/net/dev when the
// kernel refuses; it never fails. Close releases the eBPF programs; Run
// closes the Source when it returns.
func New(opts Options) *Source {
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Source{opts: opts, log: log.With("hook", "linkstats")}
	if len(opts.Ifaces) > 0 {
		s.want = make(map[string]bool, len(opts.Ifaces))
		for _, n := range opts.Ifaces {
			s.want[n] = true
		}
	}
	if opts.ProcfsOnly {
		s.reason = fmt.Errorf("linkstats: ebpf disabled by configuration: %w", ErrUnavailable)
	} else {
		r, err := openEBPF()
		if err == nil {
			s.mode, s.r = ModeEBPF, r
			s.log.Info("link counters from eBPF tracepoints")
			return s
		}
		s.reason = err
		s.log.Warn("eBPF link counters unavailable; reading /proc/net/dev instead", "reason", err)
	}
	s.mode, s.r = ModeProcfs, &procReader{path: opts.ProcRoot + "/net/dev"}
	return s
}

// Mode is ModeEBPF or ModeProcfs.
func (s *Source) Mode() string { return s.mode }

// Reason is nil in eBPF mode, otherwise why eBPF was not used; it wraps
// ErrUnavailable (and ErrUnsupported on 32-bit ARM). The agent puts it in
// its state message.
func (s *Source) Reason() error { return s.reason }

// Close detaches the eBPF programs. It is safe to call more than once.
func (s *Source) Close() error { return s.r.Close() }

func (s *Source) wanted(name string) bool {
	if s.want != nil {
		return s.want[name]
	}
	return name != "lo"
}

// Run reports every Period, one record per interface whose counters moved
// (quiet interfaces cost nothing on the wire), until ctx is done. It closes
// the Source before returning. Records are Bulk: the spool evicts them first.
func (s *Source) Run(ctx context.Context, emit func(kestrel.Record)) error {
	defer s.Close()
	prev, err := s.r.read()
	if err != nil {
		return fmt.Errorf("linkstats: first read: %w", err)
	}
	last := time.Now()
	t := time.NewTicker(s.opts.Period)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := s.r.read()
		if err != nil {
			if !failing {
				s.log.Error("reading link counters", "mode", s.mode, "err", err)
			}
			failing = true
			continue
		}
		failing = false
		now := time.Now()
		ms := now.Sub(last).Milliseconds()
		for name, c := range cur {
			if !s.wanted(name) {
				continue
			}
			d := c.sub(prev[name])
			if d == (counters{}) {
				continue
			}
			emit(kestrel.Record{
				Envelope: kestrel.Envelope{Time: now.UnixMilli(), Priority: kestrel.PriorityBulk},
				Body: &kestrel.LinkUsage{
					Iface: name, Source: s.mode, IntervalMS: uint32(ms),
					RxBytes: d.RxBytes, TxBytes: d.TxBytes,
					RxPackets: d.RxPackets, TxPackets: d.TxPackets, Drops: d.Drops,
				},
			})
		}
		prev, last = cur, now
	}
}
