package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's chromium, headless, with chromedp
// against the rig (real MQTT sessions, ingest, SQLite, HTTPS). They skip
// only when chromium is not installed (.ci/run installs it).
//
//	KESTREL_DASHBOARD_DEVICES=N  simulated devices (default 20; make dashboard-bench: 5000)
//	KESTREL_DASHBOARD_RATE_MILLI=M  fixes per device per 1000 s (default 2000: 2 Hz)
//	KESTREL_DASHBOARD_SHOTS=DIR  write the pages' screenshots there (docs/ for docs/dashboard.md)

func chromium(t *testing.T) string {
	if testing.Short() {
		t.Skip("browser test: not in -short")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true), // the rig's self-signed certificate
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	return ctx
}

func envN(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("KESTREL_DASHBOARD_SHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	var b []byte
	if err := chromedp.Run(ctx, chromedp.Sleep(300*time.Millisecond), chromedp.CaptureScreenshot(&b)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// poll evaluates a JS expression until it is true.
func poll(t *testing.T, ctx context.Context, what, expr string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var ok bool
		if err := chromedp.Run(ctx, chromedp.Evaluate(expr, &ok)); err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			var html string
			_ = chromedp.Run(ctx, chromedp.OuterHTML("body", &html))
			t.Fatalf("%s: not after %v (%s)\n%.2000s", what, limit, expr, html)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestBrowserDashboard: log in, see every device on the map, see an
// emergency raised on a device's session as a banner, acknowledge it,
// replay a track, and get nothing after logging out.
func TestBrowserDashboard(t *testing.T) {
	n := envN("KESTREL_DASHBOARD_DEVICES", 20)
	r := startRig(t, n)
	car := r.unit("car-7")
	now := time.Now()
	for i := range 60 {
		car.fix(51.5+float64(i)*0.0004, -0.12+float64(i)*0.0006, now.Add(time.Duration(i-60)*time.Second))
	}
	car.battery(81)
	car.setState(map[string]any{"battery": 81, "battery_status": "Charging", "radio_profile": "lte", "radio_registered": 1, "radio_act": 7,
		"radio_rssi": -71, "spool_records": 3, "spool_bytes": 2048, "spool_oldest_s": 2, "privacy_mode": "off"})
	r.waitDevices(n + 1)
	ctx := browser(t)

	// Log in through the form.
	if err := chromedp.Run(ctx, chromedp.Navigate(r.base+"/"), chromedp.WaitVisible("#user", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "dashboard-login.png")
	navStart := time.Now()
	if err := chromedp.Run(ctx,
		chromedp.SendKeys("#user", "sam", chromedp.ByID), chromedp.SendKeys("#password", superPass, chromedp.ByID),
		chromedp.Click("#submit", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	want := n + 1
	poll(t, ctx, "every device on the map", fmt.Sprintf("typeof K !== 'undefined' && K.metrics.firstPaint && Object.keys(K.markers).length >= %d", want), 60*time.Second)
	var fp map[string]float64
	if err := chromedp.Run(ctx, chromedp.Evaluate(`K.metrics.firstPaint`, &fp)); err != nil {
		t.Fatal(err)
	}
	t.Logf("first paint of the live map with %d devices: %.0f ms after the event stream opened, %.0f ms after navigation (login submit to paint: %v)",
		int(fp["n"]), fp["ms"], fp["sinceNav"], time.Since(navStart).Round(time.Millisecond))
	shot(t, ctx, "dashboard-map.png")

	// A live update: a new fix of car-7 moves its marker.
	var ok bool
	if err := chromedp.Run(ctx, chromedp.Evaluate(`K.metrics.moved = 0; (function w(){ var d = K.devices['met/car-7']; if (d && d.last_lat > 51.6) { K.metrics.moved = Date.now(); } else requestAnimationFrame(w); })(); true`, &ok)); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	car.fix(51.7, -0.1, sent)
	poll(t, ctx, "live update", `K.metrics.moved > 0`, 30*time.Second)
	var moved float64
	_ = chromedp.Run(ctx, chromedp.Evaluate(`K.metrics.moved`, &moved))
	t.Logf("live update: fix taken to marker moved in the browser: %d ms", int64(moved)-sent.UnixMilli())

	// An emergency raised on the device shows as a banner.
	raised := time.Now()
	car.emergency()
	took := poll(t, ctx, "emergency banner", `!!document.querySelector('#banner .emergency[data-device="car-7"]')`, 10*time.Second)
	var shown float64
	_ = chromedp.Run(ctx, chromedp.Evaluate(`K.metrics.emergencyAt`, &shown))
	committed := r.emergencyCommitted.Load()
	t.Logf("emergency: raised on the device to banner in the browser: %v (raised to committed by ingest %d ms, committed to banner drawn %d ms, test's poll %d ms)",
		took.Round(time.Millisecond), committed-raised.UnixMilli(), int64(shown)-committed, took.Milliseconds()-(int64(shown)-raised.UnixMilli()))
	shot(t, ctx, "dashboard-emergency.png")
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.querySelector('#banner button.ack').click(); true`, &ok)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "banner gone after the acknowledgement", `document.getElementById('banner').hidden`, 10*time.Second)
	if acks := r.audit("ack-emergency"); len(acks) != 1 || acks[0].Actor != "sam" {
		t.Fatalf("ack audit %+v", acks)
	}

	// The device list, filtered.
	if err := chromedp.Run(ctx, chromedp.Navigate(r.base+"/#list"), chromedp.WaitVisible("#devices", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "device list rows", fmt.Sprintf("document.querySelectorAll('#devices tbody tr').length >= %d", min(want, 1000)), 30*time.Second)
	shot(t, ctx, "dashboard-list.png")
	if err := chromedp.Run(ctx, chromedp.SendKeys("#filter", "car-", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "filter", `document.querySelectorAll('#devices tbody tr').length === 1`, 10*time.Second)
	// Its battery, radio, spool and privacy columns, from its state message.
	poll(t, ctx, "status columns", `(function(){ var t = document.querySelector('#devices tbody tr[data-device="car-7"]').textContent;
		return t.indexOf('81 % charging') >= 0 && t.indexOf('LTE · home · -71 dBm') >= 0 && t.indexOf('3 rec · 2.0 kB · oldest 2 s') >= 0 && t.indexOf('off') >= 0; })()`, 10*time.Second)
	shot(t, ctx, "dashboard-list-filtered.png")

	// Open the device and replay its track.
	// The list re-renders on every live update: click in one step in the page.
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.querySelector('#devices tbody a').click(); true`, &ok)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "track loaded", `K.deviceLoaded && K.track.length >= 60 && document.querySelectorAll('#timeline .tick.ev.emergency').length === 1 && document.querySelectorAll('#dev-gaps li').length > 0 && document.getElementById('dev-latest').textContent.indexOf('81') > 0 && document.getElementById('dev-state').textContent.indexOf('LTE · home') > 0`, 30*time.Second)
	if err := chromedp.Run(ctx, chromedp.Click("#dev-play", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "replay to the end", `K.replayDone === true`, 30*time.Second)
	shot(t, ctx, "dashboard-device.png")
	if views := r.audit("view-track"); len(views) == 0 || views[0].Device != "car-7" {
		t.Fatalf("track view not audited: %+v", views)
	}
	if err := chromedp.Run(ctx, chromedp.Navigate(r.base+"/#config"), chromedp.WaitVisible("#config-list", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "config view", `document.querySelectorAll('#config-list details').length > 0`, 30*time.Second)
	shot(t, ctx, "dashboard-config.png")

	// Logged out, the browser gets nothing.
	if err := chromedp.Run(ctx, chromedp.Click("#logout", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "back at the login", `location.pathname === '/login'`, 10*time.Second)
	var status float64
	if err := chromedp.Run(ctx, chromedp.Evaluate(`(async () => (await fetch('/api/v1/devices')).status)()`, &status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) })); err != nil {
		t.Fatal(err)
	}
	if status != 401 {
		t.Fatalf("after logout /api/v1/devices: %v", status)
	}
}
