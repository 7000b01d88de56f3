//go:build !(linux && (amd64 || arm64))

package execaudit

import (
	"errors"
	"strings"
	"testing"
)

// TestUnavailableWhereUnsupported runs in the linux/arm build under
// qemu-arm (issue 8).
func TestUnavailableWhereUnsupported(t *testing.T) {
	s, err := New(Options{Allow: DefaultAllow})
	if s != nil || !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrUnsupported) ||
		!strings.Contains(err.Error(), "ebpf: not supported on linux/arm") {
		t.Fatalf("New = %v, %v", s, err)
	}
	t.Logf("execaudit: %v", err)
	if _, err := New(Options{Allow: []string{"relative/"}}); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("a bad allow-list must be a config error, got %v", err)
	}
}
