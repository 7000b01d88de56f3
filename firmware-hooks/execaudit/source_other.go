//go:build !(linux && (amd64 || arm64))

package execaudit

import (
	"context"
	"log/slog"

	kestrel "github.com/kestrel-edge/kestrel"
	"github.com/kestrel-edge/kestrel/firmware-hooks/internal/probe"
)

// Options configure a Source.
type Options struct {
	Allow  []string
	Logger *slog.Logger
}

// Source is never constructed on this architecture.
type Source struct{}

// New always fails here: cilium/ebpf does not support this architecture
// (32-bit ARM among them). The error wraps ErrUnavailable and
// ErrUnsupported.
func New(opts Options) (*Source, error) {
	if _, err := NewAllowList(opts.Allow); err != nil {
		return nil, err
	}
	return nil, probe.Unavailable("execaudit", "probe", probe.ErrUnsupported)
}

// Run returns at once.
func (s *Source) Run(ctx context.Context, emit func(kestrel.Record)) error { return nil }

// Close does nothing.
func (s *Source) Close() error { return nil }
