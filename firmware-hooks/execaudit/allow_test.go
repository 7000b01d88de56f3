package execaudit

import (
	"testing"
	"time"

	kestrel "github.com/kestrel-edge/kestrel"
)

func TestAllowList(t *testing.T) {
	a, err := NewAllowList([]string{"/usr/bin/", "/opt/cam/bin/recorder", "/sbin//"})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		"/usr/bin/true":              true,
		"/usr/bin/sub/dir/x":         true,
		"/usr/bin":                   false, // the directory itself is not a program below it
		"/usr/binx/evil":             false,
		"/usr/bin/../../tmp/evil":    false,
		"/opt/cam/bin/recorder":      true,
		"/opt/cam/bin//recorder":     true,
		"/opt/cam/bin/recorder2":     false,
		"/opt/cam/bin/":              false,
		"/sbin/init":                 true,
		"./true":                     false, // relative: where it ran from is unknown
		"true":                       false,
		"":                           false,
		"/tmp/usr/bin/true":          false,
		"/usr/bin/./../sbin/useradd": false,
	} {
		if got := a.Allowed(p); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", p, got, want)
		}
	}
	if _, err := NewAllowList([]string{"usr/bin/"}); err == nil {
		t.Error("relative entry accepted")
	}
	root, _ := NewAllowList([]string{"/"})
	if !root.Allowed("/anything/at/all") {
		t.Error(`"/" should allow every absolute path`)
	}
	var empty AllowList
	if empty.Allowed("/usr/bin/true") {
		t.Error("the empty list allowed something")
	}
}

func TestRecords(t *testing.T) {
	a, _ := NewAllowList([]string{"/usr/bin/"})
	now := time.UnixMilli(1764172800000)
	ok := records(a, execEvent{PID: 10, PPID: 1, Path: "/usr/bin/true", ParentComm: "init"}, now)
	if len(ok) != 1 || !ok[0].Body.(*kestrel.ExecAudit).Allowed || ok[0].Priority != kestrel.PriorityBulk {
		t.Errorf("allowed exec: %+v", ok)
	}
	// A truncated path fails closed even under an allowed prefix.
	bad := records(a, execEvent{PID: 11, PPID: 1, Path: "/usr/bin/aaaa", Truncated: true}, now)
	if len(bad) != 2 {
		t.Fatalf("truncated exec: %d records", len(bad))
	}
	ev := bad[1].Body.(*kestrel.Event)
	if ev.Type != kestrel.EventSecurity || bad[1].Priority != kestrel.PriorityHigh || ev.Value != 11 || bad[1].Time != now.UnixMilli() {
		t.Errorf("security event: %+v %+v", bad[1].Envelope, ev)
	}
}
