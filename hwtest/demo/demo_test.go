package demo

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `kestrel demo` for a few seconds: the platform side must
// see decoded positions, the firmware's emergency, and no sequence gap.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: skipped with -short")
	}
	var out, logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := Run(ctx, Options{For: 6 * time.Second, Speed: 20, Out: &out, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if sum.Positions < 50 || sum.Events < 2 || len(sum.Gaps) != 0 || sum.Missing != 0 {
		t.Fatalf("summary %+v\n%s", sum, out.String())
	}
	for _, want := range []string{`"kind":"position"`, `"type":"emergency"`, `"kind":"radio"`, "gaps      0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %s", want)
		}
	}
	// The demo ends as a clean stop: no part looks lost.
	for _, bad := range []string{"level=WARN", "level=ERROR", "port lost"} {
		if strings.Contains(logs.String()+out.String(), bad) {
			t.Errorf("the demo logged %q:\n%s", bad, logs.String())
		}
	}
	if bpf := sum.BytesPerFix(); bpf <= 0 || bpf > 30 {
		t.Errorf("%.1f bytes per fix", bpf)
	}
}
