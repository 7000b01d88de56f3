//go:build !kestrel_release

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// lockedBuffer is a bytes.Buffer the demo writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	dashboardLine = regexp.MustCompile(`dashboard (http://127\.0\.0\.1:\d+)/ `)
	loginLine     = regexp.MustCompile(`login: (\S+) / (\S+) `)
)

// TestDemoDashboard runs `kestrel demo --http` on a free loopback port,
// reads the one-time login it prints, and once the devices have stopped
// and the summary is out, logs in over plain HTTP and sees the demo's
// device with a fix; the password is in the terminal output once
// and nowhere in the log.
func TestDemoDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- dispatch([]string{"demo", "--http", "127.0.0.1:0", "--speed", "20", "--for", "3s", "-v"}, stdio{ctx: ctx, stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
	}()
	var base, user, pass string
	// After the summary the dashboard stays up until interrupted.
	for base == "" || user == "" || !strings.Contains(out.String(), "stays up") {
		select {
		case code := <-done:
			t.Fatalf("demo exited %d before printing its login:\n%s%s", code, out.String(), errb.String())
		case <-ctx.Done():
			t.Fatalf("no login printed:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := dashboardLine.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		}
		if m := loginLine.FindStringSubmatch(out.String()); m != nil {
			user, pass = m[1], m[2]
		}
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(path string) (int, []byte) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get("/web/devices"); code != http.StatusUnauthorized {
		t.Fatalf("devices without a login: %d", code)
	}
	resp, err := c.PostForm(base+"/login", url.Values{"user": {user}, "password": {"not-" + pass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/login" {
		t.Fatalf("a wrong password got to %s", resp.Request.URL)
	}
	if resp, err = c.PostForm(base+"/login", url.Values{"user": {user}, "password": {pass}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	var seen bool
	for !seen {
		code, b := get("/web/devices")
		if code != http.StatusOK {
			t.Fatalf("devices after login: %d %s", code, b)
		}
		var r struct {
			Devices []struct {
				Device  string   `json:"device"`
				LastLat *float64 `json:"last_lat"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		for _, d := range r.Devices {
			seen = seen || (d.Device == "bwv-0042" && d.LastLat != nil)
		}
		if !seen {
			select {
			case <-ctx.Done():
				t.Fatalf("the dashboard never showed bwv-0042 with a fix: %s", b)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	demoInBrowser(t, base, user, pass)
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("demo exit %d:\n%s", code, errb.String())
	}
	if n := strings.Count(out.String(), pass); n != 1 {
		t.Errorf("the password is printed %d times, want once", n)
	}
	if strings.Contains(errb.String(), pass) {
		t.Error("the password is in the log")
	}
}

// A plain listener off loopback is refused before anything starts.
func TestDemoPlainHTTPOnlyOnLoopback(t *testing.T) {
	var out, errb bytes.Buffer
	code := dispatch([]string{"demo", "--http", "0.0.0.0:0"}, stdio{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb})
	if code != 2 || !strings.Contains(errb.String(), "--https") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if out.Len() != 0 {
		t.Fatalf("the demo started: %s", out.String())
	}
}

// demoInBrowser logs in to the demo's dashboard in Debian's chromium,
// headless, over plain HTTP on loopback (where the browser keeps the
// session's Secure cookie, loopback being a secure context), and waits for
// the device's marker on the map. Without chromium it says so and returns.
func demoInBrowser(t *testing.T, base, user, pass string) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Log("chromium not installed: the browser check is skipped")
		return
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(path),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()))
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(actx)
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, time.Minute)
	defer cancel3()
	var markers int
	err = chromedp.Run(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible("#user", chromedp.ByID),
		chromedp.SendKeys("#user", user, chromedp.ByID), chromedp.SendKeys("#password", pass, chromedp.ByID),
		chromedp.Click("#submit", chromedp.ByID))
	// The form's submit navigates to the map: evaluate in the new page.
	for err == nil {
		var ok bool
		if chromedp.Run(ctx, chromedp.Evaluate(`typeof K !== 'undefined' && K.markers['demo/bwv-0042'] !== undefined`, &ok)) == nil && ok {
			err = chromedp.Run(ctx, chromedp.Evaluate(`Object.keys(K.markers).length`, &markers))
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		var html string
		_ = chromedp.Run(ctx, chromedp.OuterHTML("body", &html))
		t.Fatalf("the demo's map in chromium: %v\n%.1000s", err, html)
	}
	t.Logf("chromium: logged in over plain HTTP, %d marker(s) on the map", markers)
}
