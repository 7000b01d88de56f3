package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// Output: every fleet command prints a table for people, or with --json
// one JSON document (tail: one JSON object per line, as it always does).
// The shapes are documented in docs/config.md ("kestrelctl --json") and
// only grow: fields are added, never renamed or removed.

func addJSONFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print one JSON document instead of the table (shape: docs/config.md)")
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal: progress frames (a bar
// redrawn with \r) go only to one; anything else gets plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// pushProgress shows the answers to a push as they arrive: a one-line bar on
// a terminal, one plain line per answer otherwise.
type pushProgress struct {
	w      io.Writer
	tty    bool
	total  int
	counts map[string]int
	drawn  bool
	last   string
	// labels are the results the bar counts (default: config push's).
	labels []string
}

func newPushProgress(w io.Writer, total int) *pushProgress {
	return &pushProgress{w: w, tty: isTerminal(w), total: total, counts: map[string]int{}}
}

func (p *pushProgress) answer(d *deviceResult, answered int) {
	p.counts[d.Result]++
	if !p.tty {
		line := fmt.Sprintf("%s %s (%d/%d)", d.Device, strings.ReplaceAll(d.Result, "_", " "), answered, p.total)
		if det := reportDetail(d.Errors); det != "" {
			line += ": " + det
		}
		fmt.Fprintln(p.w, line)
		return
	}
	done := answered
	const width = 30
	fill := width
	if p.total > 0 {
		fill = min(width, done*width/p.total)
	}
	labels := p.labels
	if labels == nil {
		labels = []string{"applied", "rejected", "rolled_back"}
	}
	line := fmt.Sprintf("\r[%s%s] %d/%d", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, p.total)
	for _, l := range labels {
		line += fmt.Sprintf("  %s %d", strings.ReplaceAll(l, "_", " "), p.counts[l])
	}
	if line != p.last {
		fmt.Fprint(p.w, line)
		p.last, p.drawn = line, true
	}
}

func (p *pushProgress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
