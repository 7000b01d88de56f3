package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kestrel-edge/kestrel/hwtest/postgres"
)

// TestNothingWithoutSession: every path but /login and /healthz, pages,
// static assets, the event stream, the read API and /metrics, answers 401
// with an empty body (or a redirect to /login for /) without a session,
// and with a forged cookie.
func TestNothingWithoutSession(t *testing.T) {
	r := startRig(t, 2)
	r.waitDevices(2)
	paths := []string{"/", "/index.html", "/static/app.js", "/static/vendor/leaflet/leaflet.js", "/static/world/land-110m.json",
		"/web/events", "/web/devices", "/web/emergencies", "/web/session", "/web/device?fleet=met&device=sim-00000",
		"/api/v1/devices", "/api/v1/gaps", "/api/v1/track?device=sim-00000", "/metrics", "/nonexistent"}
	for _, forged := range []bool{false, true} {
		c := r.client()
		for _, p := range paths {
			req, _ := http.NewRequest("GET", r.base+p, nil)
			if forged {
				req.AddCookie(&http.Cookie{Name: cookieName, Value: newToken()})
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if p == "/" {
				if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
					t.Errorf("GET / (forged %v): %d, want a redirect to /login", forged, resp.StatusCode)
				}
			} else if resp.StatusCode != http.StatusUnauthorized || len(body) != 0 {
				t.Errorf("GET %s (forged %v): %d with %d bytes, want 401 and nothing", p, forged, resp.StatusCode, len(body))
			}
		}
		for _, p := range []string{"/web/ack", "/logout"} {
			resp, err := c.Post(r.base+p, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("POST %s: %d, want 401", p, resp.StatusCode)
			}
		}
	}
	// Plain HTTP on the TLS port gets nothing useful either.
	resp, err := http.Get("http://" + r.http.Addr + "/api/v1/devices")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(b, []byte("sim-")) {
			t.Fatal("device data over plain HTTP")
		}
	}
	// A wrong password is refused and audited; the right one gets in.
	c := r.client()
	resp, err = c.PostForm(r.base+"/login", map[string][]string{"user": {"olive"}, "password": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/login?failed=1" || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong password: %s, cookies %v", loc, resp.Cookies())
	}
	if len(r.audit("login-failed")) != 1 {
		t.Fatal("failed login not audited")
	}
	r.login(c, "olive", viewerPass)
	resp, err = c.Get(r.base + "/api/v1/devices")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("sim-00001")) {
		t.Fatalf("with a session: %d %s", resp.StatusCode, b)
	}
}

// TestSessionCookie: HttpOnly, Secure, SameSite=Strict.
func TestSessionCookie(t *testing.T) {
	r := startRig(t, 0)
	c := r.client()
	resp, err := c.PostForm(r.base+"/login", map[string][]string{"user": {"sam"}, "password": {superPass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{cookieName + "=", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	// A cross-site login form is refused.
	req, _ := http.NewRequest("POST", r.base+"/login", strings.NewReader("user=sam&password="+superPass))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err = r.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin login: %d", resp.StatusCode)
	}
}

// TestEmergencyAckRolesCSRFAudit: an emergency from a device's session is
// listed until a supervisor acknowledges it, with the CSRF token; a viewer
// may not, a request without the token may not; the acknowledgement and
// every track view are audited.
func TestEmergencyAckRolesCSRFAudit(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testEmergencyAck(t, "") })
	t.Run("postgres", func(t *testing.T) {
		if testing.Short() {
			t.Skip("postgres: not in -short")
		}
		testEmergencyAck(t, postgres.Start(t).URL(t))
	})
}

func testEmergencyAck(t *testing.T, dbURL string) {
	r := startRigDB(t, 0, dbURL)
	u := r.unit("car-7")
	u.fix(51.5, -0.12, time.Now())
	u.emergency()
	var em []Emergency
	end := time.Now().Add(testDeadline)
	super, viewer := r.client(), r.client()
	stok, vtok := r.login(super, "sam", superPass), r.login(viewer, "olive", viewerPass)
	// The emergency goes on the events lane, ahead of the fix on the
	// telemetry lane: it may be listed before its position is known.
	for len(em) == 0 || em[0].Lat == nil {
		if time.Now().After(end) {
			t.Fatalf("emergency never listed with its position: %+v", em)
		}
		time.Sleep(50 * time.Millisecond)
		resp, err := viewer.Get(r.base + "/web/emergencies")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&em)
		resp.Body.Close()
	}
	if em[0].Device != "car-7" || em[0].Lat == nil || *em[0].Lat != 51.5 {
		t.Fatalf("emergency %+v", em[0])
	}
	body, _ := json.Marshal(em[0].emergencyKey)
	post := func(c *http.Client, tok string) int {
		req, _ := http.NewRequest("POST", r.base+"/web/ack", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set(csrfHeader, tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post(super, ""); c != http.StatusForbidden {
		t.Fatalf("ack without csrf: %d", c)
	}
	if c := post(super, vtok); c != http.StatusForbidden {
		t.Fatalf("ack with another session's csrf: %d", c)
	}
	if c := post(viewer, vtok); c != http.StatusForbidden {
		t.Fatalf("viewer ack: %d", c)
	}
	if n := len(r.audit("ack-emergency")); n != 0 {
		t.Fatalf("%d acks audited before one was allowed", n)
	}
	if c := post(super, stok); c != http.StatusNoContent {
		t.Fatalf("supervisor ack: %d", c)
	}
	acks := r.audit("ack-emergency")
	if len(acks) != 1 || acks[0].Actor != "sam" || acks[0].Device != "car-7" {
		t.Fatalf("ack audit %+v", acks)
	}
	resp, err := viewer.Get(r.base + "/web/emergencies")
	if err != nil {
		t.Fatal(err)
	}
	em = nil
	_ = json.NewDecoder(resp.Body).Decode(&em)
	resp.Body.Close()
	if len(em) != 0 {
		t.Fatalf("acknowledged emergency still listed: %+v", em)
	}
	resp, err = viewer.Get(r.base + "/api/v1/track?fleet=met&device=car-7&format=geojson")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte("51.5")) {
		t.Fatalf("track: %s", b)
	}
	views := r.audit("view-track")
	if len(views) != 1 || views[0].Actor != "olive" || views[0].Device != "car-7" {
		t.Fatalf("track view audit %+v", views)
	}
}

func TestUsersFile(t *testing.T) {
	line, err := HashLine("a", RoleViewer, "pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a:viewer", "a:admin:" + line[len("a:viewer:"):], "a:viewer:notahash", line + "\n" + line} {
		if _, err := ParseUsers(strings.NewReader(bad)); err == nil {
			t.Errorf("users file %q accepted", bad)
		}
	}
	u, err := ParseUsers(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Check("a", "pw"); !ok {
		t.Fatal("right password refused")
	}
	if _, ok := u.Check("a", "pW"); ok {
		t.Fatal("wrong password accepted")
	}
	for _, bad := range [][3]string{{"a:b", "viewer", "password1"}, {"a", "admin", "password1"}, {"a", "viewer", "short"}} {
		if _, err := UserLine(bad[0], Role(bad[1]), bad[2]); err == nil {
			t.Errorf("UserLine%q accepted", bad)
		}
	}
	ul, err := UserLine("bo", RoleSupervisor, "password1")
	if err != nil {
		t.Fatal(err)
	}
	if u, err := ParseUsers(strings.NewReader(ul)); err != nil || u["bo"].Role != RoleSupervisor {
		t.Fatalf("UserLine %q: %v", ul, err)
	} else if _, ok := u.Check("bo", "password1"); !ok {
		t.Fatal("UserLine's password refused")
	}
	p := filepath.Join(t.TempDir(), "users")
	os.WriteFile(p, []byte(line), 0o644)
	if _, err := LoadUsers(p); err == nil {
		t.Fatal("world-readable users file accepted")
	}
}

// TestSelfSignedCert: made once, key 0600, reused on the next start.
func TestSelfSignedCert(t *testing.T) {
	dir := t.TempDir()
	c, k := filepath.Join(dir, "d", "c.pem"), filepath.Join(dir, "d", "k.pem")
	_, made, err := LoadOrCreateCert(c, k, []string{"127.0.0.1"})
	if err != nil || !made {
		t.Fatal(made, err)
	}
	fi, _ := os.Stat(k)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	if _, made, err = LoadOrCreateCert(c, k, nil); err != nil || made {
		t.Fatal("second start made a new certificate", err)
	}
	os.Remove(c)
	if _, _, err = LoadOrCreateCert(c, k, nil); err == nil {
		t.Fatal("a key without its certificate accepted")
	}
}

func TestPlaintextOnlyLoopback(t *testing.T) {
	for _, c := range []HTTPConfig{{Addr: "0.0.0.0:0"}, {Addr: "0.0.0.0:0", UsersFile: "x", Plaintext: true}} {
		if l, err := Start(context.Background(), c, nil, nil, nil); err == nil {
			l.Close()
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestLogoutEndsEventStream: an open event stream ends once its session
// is logged out, and the cookie no longer opens one.
func TestLogoutEndsEventStream(t *testing.T) {
	r := startRig(t, 2)
	c := r.client()
	tok := r.login(c, "olive", viewerPass)
	c.Timeout = 0 // the stream must end by itself
	resp, err := c.Get(r.base + "/web/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", r.base+"/logout", nil)
	req.Header.Set(csrfHeader, tok)
	lo, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lo.Body.Close()
	if lo.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", lo.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(testDeadline):
		t.Fatal("event stream still open after logout")
	}
	again, err := c.Get(r.base + "/web/events")
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", again.StatusCode)
	}
}

// TestSlowBodyCutEventStreamKept: a client trickling a login body loses
// its connection at the server's read timeout, while an event stream
// stays open past it (the timeout bounds requests, not responses).
func TestSlowBodyCutEventStreamKept(t *testing.T) {
	old := readTimeout
	readTimeout = 500 * time.Millisecond
	t.Cleanup(func() { readTimeout = old })
	r := startRig(t, 1)
	c := r.client()
	r.login(c, "olive", viewerPass)
	c.Timeout = 0
	stream, err := c.Get(r.base + "/web/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	ended := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := stream.Body.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()

	conn, err := tls.Dial("tcp", strings.TrimPrefix(r.base, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n")
	cut := false
	for i := 0; i < 4000 && !cut; i++ { // 4000 bytes at one per 10 ms: 40 s if never cut
		if _, err := conn.Write([]byte("a")); err != nil {
			cut = true
			break
		}
		time.Sleep(10 * time.Millisecond)
		conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := conn.Read(make([]byte, 512)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cut = true
		}
	}
	if !cut {
		t.Fatal("a trickled login body held its connection to the end")
	}
	time.Sleep(2 * readTimeout)
	select {
	case err := <-ended:
		t.Fatalf("the event stream ended at the read timeout: %v", err)
	default:
	}
}

// TestFormBodyBounded: a state-changing form is parsed only up to
// maxFormBody, so a valid token behind a large body is not found (and the
// body is not read whole, to memory or disk).
func TestFormBodyBounded(t *testing.T) {
	r := startRig(t, 1)
	c := r.client()
	tok := r.login(c, "olive", viewerPass)
	logout := func(body string) int {
		t.Helper()
		resp, err := c.Post(r.base+"/logout", "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := logout("pad=" + strings.Repeat("x", 2*maxFormBody) + "&csrf=" + tok); code != http.StatusForbidden {
		t.Fatalf("a token behind %d bytes of form: %d, want 403", 2*maxFormBody, code)
	}
	if code := logout("csrf=" + tok); code != http.StatusNoContent {
		t.Fatalf("the token in a small form: %d, want 204", code)
	}
}
