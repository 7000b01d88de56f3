//go:build !linux

package probe

import "errors"

// MountTracefs is only meaningful on linux.
func MountTracefs() error { return errors.New("mount tracefs: not linux") }
