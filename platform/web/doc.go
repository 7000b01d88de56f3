// Package web owns the platform's dashboard: the pages that
// "kestrel-platform serve --http" serves from files embedded in the binary
// (go:embed, no build step at run time), the server-sent event stream that
// keeps them live, and the access control in front of everything it serves.
//
// Pages: a live map of every device's last fix (Leaflet, vendored under
// static/vendor/leaflet; tiles from a configured URL or, with none, the
// embedded Natural Earth 1:110m land outline), an emergency banner on every
// page until a supervisor acknowledges it, a device list, a device page
// with track replay, events and gaps, and the last reported config.
//
// Access: users come from a file of bcrypt hashes with a role (viewer or
// supervisor); a session is an HttpOnly, Secure, SameSite=Strict cookie;
// every state-changing request carries the session's CSRF token. Nothing
// but /login and /healthz answers without a session: pages, static assets,
// the event stream, the read API and /metrics all need one. Logins,
// acknowledgements and every view of a device's track are audited in the
// web_audit table of the platform's database.
package web
