package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/cmd/internal/fleetconn"
	"github.com/kestrel-edge/kestrel/cmd/internal/subcmd"
	"github.com/kestrel-edge/kestrel/transport/wire"
)

func runTail(args []string, s stdio) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	conn := fleetconn.AddFlags(fs) // --fleet: unset follows every fleet
	device := fs.String("device", "+", "device to follow (+: all)")
	gaps := fs.Bool("gaps", false, "report missing sequence ranges per device and boot")
	every := fs.Duration("every", 10*time.Second, "with --gaps: how often to report (0: only at exit)")
	quiet := fs.Bool("q", false, "do not print records (with --gaps: reports only)")
	count := fs.Int("count", 0, "exit after N distinct records (0: no limit)")
	dur := fs.Duration("for", 0, "exit after DURATION (0: until interrupted)")
	_ = addJSONFlag(fs) // tail always prints JSON lines; accepted so every fleet command takes --json
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: kestrelctl tail --broker URL [--fleet F] [--device D] [--gaps] [flags]

Follows live telemetry and events (kestrel/v1/{fleet}/{device}/telemetry and
/events, QoS 1) and prints each record once as a JSON line, in the format of
"kestrelctl decode". Records seen twice (at-least-once delivery) are printed
once: the platform deduplicates on (device, boot, seq).

With --gaps it also keeps, per device and boot, the sequence numbers it has
seen and prints the missing ranges as JSON lines of kind "gaps":
  {"kind":"gaps","device":"bwc-1","boot":3,"first":1,"last":900,
   "received":880,"duplicates":12,"missing":[[101,120]]}
every --every and at exit (interrupt, --for or --count). A gap between the
last seq of one boot and the first of the next is reported on the later boot
as "before":[a,b]. Ranges missing at the start, before the first record
this tail saw, are unknowable and not reported. Payloads that do not
decode are reported on stderr, and the exit status is then 1.

  kestrelctl tail --broker tls://mqtt.example:8883 --ca ca.pem --cert c.pem --key c.key --fleet met --gaps

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := subcmd.ParseFlagsOnly(fs, args); help || err != nil {
		return err
	}
	if conn.Fleet == "" {
		conn.Fleet = "+"
	}
	fleet := &conn.Fleet
	if err := conn.Check(false); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	for name, v := range map[string]string{"fleet": *fleet, "device": *device} {
		if v == "" || v != "+" && strings.ContainsAny(v, "/+#") {
			return fmt.Errorf("%w: --%s %q: a name or +", errUsage, name, v)
		}
	}
	if *count < 0 || *dur < 0 || *every < 0 {
		return fmt.Errorf("%w: --count, --for and --every must not be negative", errUsage)
	}

	po, err := conn.ClientOptions("tail")
	if err != nil {
		return err
	}
	po.SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second)

	ctx := s.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}

	// The handler only queues: decoding and printing happen here, so a
	// slow terminal pushes back through TCP rather than inside paho.
	msgs := make(chan paho.Message, 1024)
	done := make(chan struct{})
	filters := map[string]byte{
		wire.Topic(*fleet, *device, "telemetry"): 1,
		wire.Topic(*fleet, *device, "events"):    1,
	}
	var connected atomic.Bool
	var wg sync.WaitGroup // subscription reporters
	defer wg.Wait()       // after Disconnect below, which completes their tokens
	po.SetOnConnectHandler(func(c paho.Client) {
		connected.Store(true)
		tok := c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
			select {
			case msgs <- m:
			case <-done: // tail is finishing: nobody reads any more
			}
		})
		wg.Go(func() {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				fmt.Fprintf(s.stderr, "kestrelctl tail: subscribe: %v\n", tok.Error())
				return
			}
			fmt.Fprintf(s.stderr, "kestrelctl tail: subscribed to %s\n", strings.Join(slices.Sorted(maps.Keys(filters)), ", "))
		})
	})
	po.SetConnectionLostHandler(func(_ paho.Client, err error) {
		fmt.Fprintf(s.stderr, "kestrelctl tail: connection lost: %v (reconnecting)\n", err)
	})
	cl := paho.NewClient(po)
	cl.Connect() // retried in the background until ctx ends
	defer cl.Disconnect(250)
	defer close(done) // before Disconnect: unblocks a handler waiting on msgs

	out := bufio.NewWriter(s.stdout)
	defer out.Flush()
	t := newTailTracker()
	var tick <-chan time.Time
	if *gaps && *every > 0 {
		tk := time.NewTicker(*every)
		defer tk.Stop()
		tick = tk.C
	}
	var line []byte
	var bad int
	for {
		select {
		case <-ctx.Done():
			return tailFinish(out, t, *gaps, bad, connected.Load())
		case <-tick:
			t.report(out)
			if err := out.Flush(); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		case m := <-msgs:
			recs, err := wire.DecodeBatchTopic(m.Topic(), m.Payload())
			if err != nil {
				bad++
				fmt.Fprintf(s.stderr, "kestrelctl tail: %s: %v\n", m.Topic(), err)
				continue
			}
			for i := range recs {
				if !t.add(&recs[i]) || *quiet {
					continue
				}
				line = wire.AppendJSON(line[:0], &recs[i])
				line = append(line, '\n')
				if _, err := out.Write(line); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
			if len(msgs) == 0 {
				if err := out.Flush(); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
			if *count > 0 && t.distinct >= *count {
				return tailFinish(out, t, *gaps, bad, true)
			}
		}
	}
}

func tailFinish(out *bufio.Writer, t *tailTracker, gaps bool, bad int, everConnected bool) error {
	if gaps {
		t.report(out)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if bad > 0 {
		return fmt.Errorf("%d payloads could not be decoded", bad)
	}
	if t.distinct == 0 && !everConnected {
		return errors.New("never connected to the broker")
	}
	return nil
}

// tailTracker remembers which (device, boot, seq) it has seen, as sorted
// disjoint ranges, so a day of records costs a few bytes per gap.
type tailTracker struct {
	boots    map[tailBootKey]*tailRanges
	distinct int
}

type tailBootKey struct {
	device string
	boot   uint32
}

type tailRanges struct {
	r        [][2]uint64 // sorted, disjoint, non-adjacent
	received int
	dups     int
}

func newTailTracker() *tailTracker { return &tailTracker{boots: make(map[tailBootKey]*tailRanges)} }

// add records r and reports whether it is new.
func (t *tailTracker) add(r *kestrel.Record) bool {
	k := tailBootKey{r.Device, r.Boot}
	sr := t.boots[k]
	if sr == nil {
		sr = &tailRanges{}
		t.boots[k] = sr
	}
	if !sr.insert(r.Seq) {
		sr.dups++
		return false
	}
	sr.received++
	t.distinct++
	return true
}

// insert adds seq; false if it was already there.
func (s *tailRanges) insert(seq uint64) bool {
	// First range whose end is >= seq-1 (could absorb or follow seq).
	i, _ := slices.BinarySearchFunc(s.r, seq, func(r [2]uint64, v uint64) int {
		if r[1]+1 < v {
			return -1
		}
		return 1
	})
	if i < len(s.r) && s.r[i][0] <= seq && seq <= s.r[i][1] {
		return false
	}
	switch {
	case i < len(s.r) && s.r[i][1]+1 == seq: // extends range i upward
		s.r[i][1] = seq
		if i+1 < len(s.r) && s.r[i+1][0] == seq+1 {
			s.r[i][1] = s.r[i+1][1]
			s.r = slices.Delete(s.r, i+1, i+2)
		}
	case i < len(s.r) && s.r[i][0] == seq+1: // extends range i downward
		s.r[i][0] = seq
	default:
		s.r = slices.Insert(s.r, i, [2]uint64{seq, seq})
	}
	return true
}

// missing lists the holes between the first and last seq seen.
func (s *tailRanges) missing() [][2]uint64 {
	var m [][2]uint64
	for i := 1; i < len(s.r); i++ {
		m = append(m, [2]uint64{s.r[i-1][1] + 1, s.r[i][0] - 1})
	}
	return m
}

// report writes one "gaps" JSON line per device and boot, sorted.
func (t *tailTracker) report(w io.Writer) {
	keys := slices.SortedFunc(maps.Keys(t.boots), func(a, b tailBootKey) int {
		if c := strings.Compare(a.device, b.device); c != 0 {
			return c
		}
		return int(int64(a.boot) - int64(b.boot))
	})
	var b []byte
	for i, k := range keys {
		sr := t.boots[k]
		b = append(b[:0], `{"kind":"gaps","device":`...)
		b = strconv.AppendQuote(b, k.device)
		b = append(b, `,"boot":`...)
		b = strconv.AppendUint(b, uint64(k.boot), 10)
		b = append(b, `,"first":`...)
		b = strconv.AppendUint(b, sr.r[0][0], 10)
		b = append(b, `,"last":`...)
		b = strconv.AppendUint(b, sr.r[len(sr.r)-1][1], 10)
		b = append(b, `,"received":`...)
		b = strconv.AppendInt(b, int64(sr.received), 10)
		b = append(b, `,"duplicates":`...)
		b = strconv.AppendInt(b, int64(sr.dups), 10)
		b = append(b, `,"missing":[`...)
		for j, m := range sr.missing() {
			if j > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, "[%d,%d]", m[0], m[1])
		}
		b = append(b, ']')
		// Seqs never repeat for a device across boots, so the previous
		// boot's last seq should be followed by this boot's first.
		if i > 0 && keys[i-1].device == k.device {
			prev := t.boots[keys[i-1]]
			if last := prev.r[len(prev.r)-1][1]; last+1 < sr.r[0][0] {
				b = fmt.Appendf(b, `,"before":[%d,%d]`, last+1, sr.r[0][0]-1)
			}
		}
		b = append(b, "}\n"...)
		_, _ = w.Write(b)
	}
}
