package eventsock

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	kestrel "github.com/kestrel-edge/kestrel"
)

// The wire protocol (docs/hooks.md has the operator's version).
//
// A client writes one event per line, LF-terminated (a CR before the LF is
// tolerated), at most MaxLine bytes including the LF:
//
//	TYPE [KEY=VALUE]...
//
// TYPE is one of the names in Types. KEY is one of name, value, text, time,
// each at most once. VALUE is either bare (printable ASCII without space,
// '"' or '\') or double-quoted UTF-8 with the escapes \" \\ \n \t. Tokens
// are separated by spaces or tabs. Blank lines are ignored.
//
//	name   the firmware's own label for the source (button, dock...), ≤ 64 bytes
//	value  a signed decimal integer (level, count, code)
//	text   free text, ≤ 512 bytes
//	time   when it happened, milliseconds since the Unix epoch UTC; the
//	       agent's clock at receipt when absent
//
// The server answers every non-blank line with one line: "ok" once the
// event is handed to the agent, or "error REASON".

// MaxLine is the longest request line, LF included.
const MaxLine = 1024

const (
	maxName = 64
	maxText = 512
)

// Types are the event types the firmware may send, with the priority each
// gets. Anything else (security, input...) is the agent's own to raise.
var Types = map[string]kestrel.Priority{
	"recording_start":  kestrel.PriorityNormal,
	"recording_stop":   kestrel.PriorityNormal,
	"emergency":        kestrel.PriorityEmergency,
	"docked":           kestrel.PriorityNormal,
	"undocked":         kestrel.PriorityNormal,
	"battery_critical": kestrel.PriorityNormal,
	"tamper":           kestrel.PriorityHigh,
	"holster":          kestrel.PriorityNormal,
	"taser":            kestrel.PriorityHigh,
}

// typeIDs maps the names in Types to their record types.
var typeIDs = func() map[string]kestrel.EventType {
	m := make(map[string]kestrel.EventType, len(Types))
	for name := range Types {
		t, err := kestrel.ParseEventType(name)
		if err != nil {
			panic("eventsock: Types has " + name + ", unknown to the record model")
		}
		m[name] = t
	}
	return m
}()

// Message is one decoded request line.
type Message struct {
	Type     kestrel.EventType
	Priority kestrel.Priority
	Name     string
	Value    int64
	Text     string
	Time     int64 // ms since the epoch; 0 when the client sent none
}

// Record is the record the agent receives for m; now is used when the
// message carries no time.
func (m Message) Record(nowMS int64) kestrel.Record {
	t := m.Time
	if t == 0 {
		t = nowMS
	}
	return kestrel.Record{
		Envelope: kestrel.Envelope{Time: t, Priority: m.Priority},
		Body:     &kestrel.Event{Type: m.Type, Source: "firmware", Name: m.Name, Value: m.Value, Text: m.Text},
	}
}

// errBlank marks a line to be ignored without a reply.
var errBlank = errors.New("blank line")

// ParseLine decodes one line, with or without its line ending. Its error
// message is what the server replies after "error ".
func ParseLine(line []byte) (Message, error) {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > MaxLine-1 {
		return Message{}, errors.New("line too long")
	}
	p := lexer{s: line}
	typ, ok := p.word()
	if !ok {
		if p.rest() {
			return Message{}, errors.New("line must start with an event type")
		}
		return Message{}, errBlank
	}
	prio, known := Types[typ]
	if !known {
		return Message{}, fmt.Errorf("unknown event type %q", clip(typ))
	}
	m := Message{Type: typeIDs[typ], Priority: prio}
	var seen [4]bool
	for p.rest() {
		key, val, err := p.pair()
		if err != nil {
			return Message{}, err
		}
		i := slices.Index(keys, key)
		if i < 0 {
			return Message{}, fmt.Errorf("unknown key %q (want name, value, text or time)", clip(key))
		}
		if seen[i] {
			return Message{}, fmt.Errorf("key %q given twice", key)
		}
		seen[i] = true
		switch key {
		case "name":
			if len(val) > maxName {
				return Message{}, fmt.Errorf("name longer than %d bytes", maxName)
			}
			m.Name = val
		case "text":
			if len(val) > maxText {
				return Message{}, fmt.Errorf("text longer than %d bytes", maxText)
			}
			m.Text = val
		case "value":
			v, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return Message{}, fmt.Errorf("value %q: not a decimal integer", clip(val))
			}
			m.Value = v
		case "time":
			v, err := strconv.ParseInt(val, 10, 64)
			if err != nil || v <= 0 || v > maxTimeMS {
				return Message{}, fmt.Errorf("time %q: want milliseconds since the epoch", clip(val))
			}
			m.Time = v
		}
	}
	return m, nil
}

var keys = []string{"name", "value", "text", "time"}

// maxTimeMS is 9999-12-31T23:59:59.999Z.
const maxTimeMS = 253402300799999

// clip keeps error replies short and printable.
func clip(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

type lexer struct {
	s []byte
	i int
}

func (l *lexer) skipSpace() {
	for l.i < len(l.s) && (l.s[l.i] == ' ' || l.s[l.i] == '\t') {
		l.i++
	}
}

// rest skips white space and reports whether anything is left.
func (l *lexer) rest() bool {
	l.skipSpace()
	return l.i < len(l.s)
}

// word reads [a-z0-9_]+.
func (l *lexer) word() (string, bool) {
	l.skipSpace()
	start := l.i
	for l.i < len(l.s) {
		c := l.s[l.i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' {
			l.i++
			continue
		}
		break
	}
	if l.i == start {
		return "", false
	}
	if l.i < len(l.s) && l.s[l.i] != ' ' && l.s[l.i] != '\t' && l.s[l.i] != '=' {
		l.i = start
		return "", false
	}
	return string(l.s[start:l.i]), true
}

func (l *lexer) pair() (key, val string, err error) {
	key, ok := l.word()
	if !ok || l.i >= len(l.s) || l.s[l.i] != '=' {
		return "", "", errors.New("want key=value")
	}
	l.i++
	if l.i < len(l.s) && l.s[l.i] == '"' {
		val, err = l.quoted()
		return key, val, err
	}
	start := l.i
	for l.i < len(l.s) && l.s[l.i] != ' ' && l.s[l.i] != '\t' {
		if !bareByte(l.s[l.i]) {
			return "", "", fmt.Errorf("value of %s: byte 0x%02x needs quoting", key, l.s[l.i])
		}
		l.i++
	}
	if l.i == start {
		return "", "", fmt.Errorf("value of %s is empty (use \"\")", key)
	}
	return key, string(l.s[start:l.i]), nil
}

func bareByte(c byte) bool { return c > ' ' && c < 0x7f && c != '"' && c != '\\' }

func (l *lexer) quoted() (string, error) {
	l.i++ // opening quote
	var b strings.Builder
	for l.i < len(l.s) {
		c := l.s[l.i]
		switch {
		case c == '"':
			l.i++
			if l.i < len(l.s) && l.s[l.i] != ' ' && l.s[l.i] != '\t' {
				return "", errors.New("want white space after a quoted value")
			}
			s := b.String()
			if !utf8.ValidString(s) {
				return "", errors.New("quoted value is not valid UTF-8")
			}
			return s, nil
		case c == '\\':
			if l.i+1 >= len(l.s) {
				return "", errors.New("unterminated quoted value")
			}
			switch l.s[l.i+1] {
			case '"', '\\':
				b.WriteByte(l.s[l.i+1])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				return "", fmt.Errorf("unknown escape %q", []byte{'\\', l.s[l.i+1]})
			}
			l.i += 2
		case c < ' ' || c == 0x7f:
			return "", fmt.Errorf("control byte 0x%02x in quoted value (use \\n or \\t)", c)
		default:
			b.WriteByte(c)
			l.i++
		}
	}
	return "", errors.New("unterminated quoted value")
}

// FormatLine builds the request line for typ and kv (keys sorted, values
// quoted where needed), LF included. It checks the line with ParseLine, so
// a client learns about a bad event before it dials.
func FormatLine(typ string, kv map[string]string) (string, error) {
	var b strings.Builder
	b.WriteString(typ)
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(quote(kv[k]))
	}
	b.WriteByte('\n')
	line := b.String()
	if _, err := ParseLine([]byte(line)); err != nil {
		if errors.Is(err, errBlank) {
			return "", errors.New("empty event type")
		}
		return "", err
	}
	return line, nil
}

func quote(v string) string {
	bare := v != ""
	for i := 0; i < len(v) && bare; i++ {
		bare = bareByte(v[i])
	}
	if bare {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
