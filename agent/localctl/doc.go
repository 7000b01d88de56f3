// Package localctl is the agent's local control socket: a Unix stream
// socket (by default /run/kestrel/control.sock, mode 0660) on which
// `kestrel status` and `kestrel selftest` ask the running agent for its
// live state without touching its ports or its broker.
//
// The protocol is one request line and one reply: the client sends
// "status\n", the server answers with one JSON object and a newline, then
// closes. Peers are identified by SO_PEERCRED: root, the agent's own uid
// and members of its group may ask; anyone else is refused. A request line
// is at most 64 bytes and a peer has 2 s to send it.
package localctl
