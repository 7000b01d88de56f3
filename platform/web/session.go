package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

const (
	cookieName   = "kestrel_session"
	csrfHeader   = "X-CSRF-Token"
	sessionTTL   = 12 * time.Hour
	maxSessions  = 10000
	tokenEntropy = 32
)

type session struct {
	// expires is read by open event streams under sessions.mu.
	user    User
	csrf    string
	expires time.Time
}

// sessions are held in memory: a restart logs everyone out.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func newToken() string {
	b := make([]byte, tokenEntropy)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create(u User) (id string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if len(s.m) >= maxSessions {
		for k, v := range s.m {
			if now.After(v.expires) {
				delete(s.m, k)
			}
		}
	}
	id = newToken()
	sess = &session{user: u, csrf: newToken(), expires: now.Add(sessionTTL)}
	s.m[id] = sess
	return id, sess
}

func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[c.Value]
	if sess == nil || time.Now().After(sess.expires) {
		delete(s.m, c.Value)
		return nil
	}
	return sess
}

func (s *sessions) drop(r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.mu.Lock()
		if sess := s.m[c.Value]; sess != nil {
			sess.expires = time.Time{} // open event streams end at their next frame
		}
		delete(s.m, c.Value)
		s.mu.Unlock()
	}
}

// live reports whether the session is still valid.
func (s *sessions) live(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(sess.expires)
}

func setCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// maxFormBody bounds a state-changing form's body (logout, acknowledge).
const maxFormBody = 4096

// csrfOK checks a state-changing request's token against its session.
func csrfOK(r *http.Request, sess *session) bool {
	tok := r.Header.Get(csrfHeader)
	if tok == "" {
		// The forms that carry the token are tiny: bound what is parsed
		// (a multipart body would otherwise be read whole, to disk).
		r.Body = http.MaxBytesReader(nil, r.Body, maxFormBody)
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) == 1
}
