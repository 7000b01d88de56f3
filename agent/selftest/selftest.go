// Package selftest is the fitter's commissioning check: it tries each part
// the configuration names (GPS receiver, radio, sensors, broker, clock,
// spool, eBPF hooks) the way the agent will use it, and reports PASS, WARN
// or FAIL for each with a one-line detail and a hint a fitter can act on.
//
// `kestrel selftest --config FILE` prints the report as a table; the
// fleet "selftest" command runs the same checks inside the running agent
// and sends the Report back as JSON. Every check is bounded in time: with a
// working installation the whole run takes a few seconds, and even with
// every part missing it ends well within 15 s.
//
// The checks only read: they send no AT command that changes a radio's
// settings, publish nothing to the broker, and leave nothing in the spool
// directory. Secrets (the broker password) are used but never printed.
package selftest

import (
	"context"
	"fmt"
	"github.com/kestrel-edge/kestrel/agent/localctl"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// Status is the outcome of one check.
type Status string

const (
	Pass Status = "pass"
	Warn Status = "warn" // works, but something needs a look
	Fail Status = "fail" // will not work as configured
	Skip Status = "skip" // not configured, not fitted, or not testable now
)

func (s Status) rank() int {
	switch s {
	case Fail:
		return 3
	case Warn:
		return 2
	case Pass:
		return 1
	}
	return 0
}

// Result is the outcome of checking one part.
type Result struct {
	// Part names what was checked: "gps", "radio", "broker", ...; with
	// several brokers, "broker tls://host:8883".
	Part   string `json:"part"`
	Status Status `json:"status"`
	// Detail says what was found, in one line.
	Detail string `json:"detail"`
	// Hint says what to do about it; empty when nothing is to be done.
	Hint string `json:"hint,omitempty"`
	// TookMS is how long the check ran, in milliseconds.
	TookMS int64 `json:"took_ms"`
}

// Report is the outcome of a whole run, in the order the parts are listed
// in the configuration file.
type Report struct {
	Time    time.Time `json:"time"`
	Results []Result  `json:"results"`
	// Status is the worst result: fail if any part failed.
	Status Status `json:"status"`
}

// Failed reports whether any part failed.
func (r Report) Failed() bool { return r.Status == Fail }

// Find returns the result of the first part whose name starts with part.
func (r Report) Find(part string) (Result, bool) {
	for _, x := range r.Results {
		if x.Part == part || strings.HasPrefix(x.Part, part+" ") {
			return x, true
		}
	}
	return Result{}, false
}

// WriteTable prints the report as an aligned table: PART, RESULT, DETAIL,
// HINT, and a summary line.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tRESULT\tDETAIL\tHINT")
	counts := map[Status]int{}
	for _, x := range r.Results {
		counts[x.Status]++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Part, strings.ToUpper(string(x.Status)), oneLine(x.Detail), oneLine(x.Hint))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s: %d pass, %d warn, %d fail, %d skip\n",
		strings.ToUpper(string(r.Status)), counts[Pass], counts[Warn], counts[Fail], counts[Skip])
	return err
}

// oneLine keeps a table row on one line whatever an error message holds.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "\t", " ")
}

// Options tune a run. The zero value suits `kestrel selftest`.
type Options struct {
	Logger *slog.Logger
	// Now is the clock being checked. Default time.Now.
	Now func() time.Time
	// GPSListen is how long the GPS check listens, once it hears valid
	// sentences, for a fix. Default 3 s.
	GPSListen time.Duration
	// BaudProbe is how long each rate is listened to when detecting the
	// GPS baud rate. Default 1.5 s, as the agent's own detection: longer
	// than a 1 Hz receiver's quiet gap, so a whole burst of sentences is
	// caught even if the first is cut.
	BaudProbe time.Duration
	// Timeout bounds one network step or AT command. Default 3 s.
	Timeout time.Duration
	// InUse names parts whose devices the caller already holds open (the
	// running agent holds "gps" and "radio"): they are reported as skipped
	// rather than opened a second time, which would steal their data.
	InUse []string
	// Agent is the running agent's live status (from its local control
	// socket), when one runs: the parts it holds are reported from it.
	Agent *localctl.Status
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.GPSListen <= 0 {
		o.GPSListen = 3 * time.Second
	}
	if o.BaudProbe <= 0 {
		o.BaudProbe = 1500 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
}

func (o *Options) inUse(part string) bool {
	for _, p := range o.InUse {
		if p == part {
			return true
		}
	}
	return false
}

// check is one part's check. It returns one or more results (one per
// broker URL).
type check struct {
	part string
	run  func(ctx context.Context) []Result
}

// Run checks every configured part, concurrently, and returns the report.
// It never returns early on a failure: the fitter wants the whole picture.
func Run(ctx context.Context, cfg config.Config, opts Options) Report {
	opts.defaults()
	start := opts.Now()

	// The clock check compares with the GPS fix time when there is one,
	// so it waits for the GPS check.
	gpsTime := make(chan gpsClock, 1)
	checks := []check{
		{"gps", func(ctx context.Context) []Result {
			r, gc := checkGPS(ctx, cfg.GPS, &opts)
			gpsTime <- gc
			return []Result{r}
		}},
		{"radio", func(ctx context.Context) []Result { return []Result{checkRadio(ctx, cfg.Radio, &opts)} }},
		{"accel", func(ctx context.Context) []Result { return []Result{checkAccel(cfg.Sensors)} }},
		{"battery", func(ctx context.Context) []Result { return []Result{checkBattery(cfg.Sensors)} }},
		{"thermal", func(ctx context.Context) []Result { return []Result{checkThermal(cfg.Sensors)} }},
		{"gpio", func(ctx context.Context) []Result { return checkGPIO(cfg.GPIO, &opts) }},
		{"broker", func(ctx context.Context) []Result { return checkBrokers(ctx, cfg, &opts) }},
		{"clock", func(ctx context.Context) []Result {
			var gc gpsClock
			select {
			case gc = <-gpsTime:
			case <-ctx.Done():
			}
			return []Result{checkClock(opts.Now(), gc)}
		}},
		{"spool", func(ctx context.Context) []Result { return []Result{checkSpool(cfg.Spool)} }},
		{"ebpf", func(ctx context.Context) []Result { return []Result{checkEBPF(cfg.Hooks, &opts)} }},
		{"hooks socket", func(ctx context.Context) []Result { return []Result{checkSocket(cfg.Hooks)} }},
	}

	// A safety net over the per-step timeouts: no run outlives this.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out := make([][]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			rs := c.run(ctx)
			took := time.Since(t0).Milliseconds()
			for j := range rs {
				if rs[j].Part == "" {
					rs[j].Part = c.part
				}
				rs[j].TookMS = took
				opts.Logger.Debug("selftest", "part", rs[j].Part, "status", rs[j].Status, "detail", rs[j].Detail)
			}
			out[i] = rs
		}()
	}
	wg.Wait()

	rep := Report{Time: start.UTC(), Status: Pass}
	for _, rs := range out {
		for _, r := range rs {
			rep.Results = append(rep.Results, r)
			if r.Status.rank() > rep.Status.rank() {
				rep.Status = r.Status
			}
		}
	}
	return rep
}

func pass(detail string) Result { return Result{Status: Pass, Detail: detail} }
func skip(detail string) Result { return Result{Status: Skip, Detail: detail} }
func warn(detail, hint string) Result {
	return Result{Status: Warn, Detail: detail, Hint: hint}
}
func fail(detail, hint string) Result {
	return Result{Status: Fail, Detail: detail, Hint: hint}
}
