package fleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kestrel-edge/kestrel/agent/config"
)

// Size limits. A config body is a TOML file (config.MaxFileSize, 64 KiB);
// its envelope carries it in base64 plus a few short fields. Commands are
// small. Anything larger is rejected before it is parsed.
const (
	MaxConfigEnvelope = 96 << 10
	MaxCommand        = 8 << 10
	maxArgs           = 32
	MaxIDLen          = 128
)

// Format tags: the first field of every envelope, so that a device rejects
// a format it does not know with a clear error.
const (
	configFormat  = "kestrel-config/1"
	commandFormat = "kestrel-cmd/1"
)

// Sentinel errors, reported to the fleet manager and audited.
var (
	ErrMalformed      = errors.New("malformed message")
	ErrTooLarge       = errors.New("message too large")
	ErrUnsigned       = errors.New("unsigned, and remote.require_signed is on")
	ErrUntrustedKey   = errors.New("signed by a key not in remote.trusted_keys")
	ErrBadSignature   = errors.New("bad signature")
	ErrWrongTarget    = errors.New("addressed to another target")
	ErrStale          = errors.New("version not newer than the running one")
	ErrReplay         = errors.New("replay of an already applied config")
	ErrExpired        = errors.New("command outside its validity window")
	ErrReplayedCmd    = errors.New("replayed command request id")
	ErrUnknownCommand = errors.New("unknown command")
)

// Target is what a config is addressed to: a whole fleet, a group, or one
// device. It is part of the signed message, so a config signed for one
// device cannot be replayed to another or to the whole fleet.
type Target struct {
	Fleet string
	// Scope is "all", "group/NAME" or "device/ID".
	Scope string
}

// AllDevices, Group and Device build targets.
func AllDevices(fleet string) Target     { return Target{fleet, "all"} }
func Group(fleet, name string) Target    { return Target{fleet, "group/" + name} }
func Device(fleet, device string) Target { return Target{fleet, "device/" + device} }

// Topic is the retained topic that carries the target's desired config.
func (t Target) Topic() string {
	switch {
	case t.Scope == "all":
		return Prefix(t.Fleet) + "_all/" + ChannelDesired
	case strings.HasPrefix(t.Scope, "group/"):
		return Prefix(t.Fleet) + "_group/" + strings.TrimPrefix(t.Scope, "group/") + "/" + ChannelDesired
	default:
		return DeviceTopic(t.Fleet, strings.TrimPrefix(t.Scope, "device/"), ChannelDesired)
	}
}

func (t Target) String() string { return t.Fleet + ":" + t.Scope }

func (t Target) check() error {
	if err := CheckName(t.Fleet); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	switch {
	case t.Scope == "all":
		return nil
	case strings.HasPrefix(t.Scope, "group/"):
		return CheckName(strings.TrimPrefix(t.Scope, "group/"))
	case strings.HasPrefix(t.Scope, "device/"):
		return CheckName(strings.TrimPrefix(t.Scope, "device/"))
	}
	return fmt.Errorf("scope %q: want all, group/NAME or device/ID", t.Scope)
}

// CheckName accepts the identifiers that config.Validate accepts for
// device, fleet and group names.
func CheckName(s string) error {
	if s == "" || len(s) > 64 || s[0] == '_' {
		return fmt.Errorf("bad name %q", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("bad name %q", s)
		}
	}
	return nil
}

// KeyID names a public key: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// ConfigEnvelope is a signed remote config as published on a
// config/desired topic (JSON; see docs/config.md).
type ConfigEnvelope struct {
	Format  string `json:"kestrel"`
	Fleet   string `json:"fleet"`
	Scope   string `json:"target"`
	Version uint64 `json:"version"`
	Issued  int64  `json:"issued"` // ms since the epoch, for the audit trail
	KeyID   string `json:"kid,omitempty"`
	Body    []byte `json:"body"` // TOML, a partial config laid over the device's own
	Sig     []byte `json:"sig,omitempty"`
	// Cosigs are further signatures of the same content by other keys,
	// for a device whose remote.config_threshold asks for more than one.
	Cosigs []Signature `json:"cosigs,omitempty"`
}

// Signature is one key's signature of an envelope or command.
type Signature struct {
	KeyID string `json:"kid"`
	Sig   []byte `json:"sig"`
}

// MaxSignatures bounds the signatures on one message (config.MaxThreshold).
const MaxSignatures = config.MaxThreshold

// signatures lists the message's signatures: the first, then the cosigs.
func signatures(kid string, sig []byte, cosigs []Signature) []Signature {
	if len(sig) == 0 {
		return nil
	}
	return append([]Signature{{kid, sig}}, cosigs...)
}

// Signers are the key ids that signed the envelope, as they appear.
func (e *ConfigEnvelope) Signers() []string { return signerIDs(signatures(e.KeyID, e.Sig, e.Cosigs)) }

func signerIDs(sigs []Signature) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		out[i] = s.KeyID
	}
	return out
}

// Target returns the envelope's target.
func (e *ConfigEnvelope) Target() Target { return Target{e.Fleet, e.Scope} }

func (e *ConfigEnvelope) signed() []byte {
	var b bytes.Buffer
	b.Grow(64 + len(e.Body))
	b.WriteString(configFormat + "\n" + e.Fleet + "\n" + e.Scope + "\n")
	b.WriteString(strconv.FormatUint(e.Version, 10) + "\n" + strconv.FormatInt(e.Issued, 10) + "\n")
	b.Write(e.Body)
	return b.Bytes()
}

// SignConfig signs a config body for a target and version, and returns the
// envelope to publish (retained) on t.Topic(). A nil key makes an unsigned
// envelope, which only devices with remote.require_signed = false accept.
func SignConfig(priv ed25519.PrivateKey, t Target, version uint64, body []byte) ([]byte, error) {
	var keys []ed25519.PrivateKey
	if priv != nil {
		keys = append(keys, priv)
	}
	return SignConfigBy(keys, t, version, body)
}

// SignConfigBy signs with every key (distinct keys, at most MaxSignatures):
// for devices whose remote.config_threshold asks for N of them.
func SignConfigBy(keys []ed25519.PrivateKey, t Target, version uint64, body []byte) ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("sign config: %w", err)
	}
	if version == 0 {
		return nil, errors.New("sign config: version must be at least 1")
	}
	if len(body) > config.MaxFileSize {
		return nil, fmt.Errorf("sign config: %w: body of %d bytes, limit %d", ErrTooLarge, len(body), config.MaxFileSize)
	}
	e := ConfigEnvelope{Format: configFormat, Fleet: t.Fleet, Scope: t.Scope, Version: version, Issued: time.Now().UnixMilli(), Body: body}
	sigs, err := signAll(keys, e.signed())
	if err != nil {
		return nil, fmt.Errorf("sign config: %w", err)
	}
	if len(sigs) > 0 {
		e.KeyID, e.Sig, e.Cosigs = sigs[0].KeyID, sigs[0].Sig, sigs[1:]
	}
	return json.Marshal(&e)
}

// signAll signs msg with each key, refusing a key given twice.
func signAll(keys []ed25519.PrivateKey, msg []byte) ([]Signature, error) {
	if len(keys) > MaxSignatures {
		return nil, fmt.Errorf("%d signing keys, limit %d", len(keys), MaxSignatures)
	}
	var sigs []Signature
	for _, k := range keys {
		kid := KeyID(k.Public().(ed25519.PublicKey))
		for _, s := range sigs {
			if s.KeyID == kid {
				return nil, fmt.Errorf("key %s given twice: a threshold counts distinct keys", kid)
			}
		}
		sigs = append(sigs, Signature{KeyID: kid, Sig: ed25519.Sign(k, msg)})
	}
	return sigs, nil
}

// DecodeConfig parses a config envelope strictly. It checks the shape, not
// the signature (Verify does).
func DecodeConfig(payload []byte) (*ConfigEnvelope, error) {
	if len(payload) > MaxConfigEnvelope {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxConfigEnvelope)
	}
	var e ConfigEnvelope
	if err := strictJSON(payload, &e); err != nil {
		return nil, err
	}
	if e.Format != configFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrMalformed, e.Format, configFormat)
	}
	if err := e.Target().check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if e.Version == 0 {
		return nil, fmt.Errorf("%w: version 0", ErrMalformed)
	}
	if len(e.Body) > config.MaxFileSize {
		return nil, fmt.Errorf("%w: body of %d bytes, limit %d", ErrTooLarge, len(e.Body), config.MaxFileSize)
	}
	if !utf8.Valid(e.Body) {
		return nil, fmt.Errorf("%w: body is not UTF-8", ErrMalformed)
	}
	if err := checkSigs(e.KeyID, e.Sig, e.Cosigs); err != nil {
		return nil, err
	}
	return &e, nil
}

// Command is a signed command to one device. Reply is the channel, under
// the device's own topic tree, that the reply goes to ("reply" or
// "reply/SOMETHING"), so a device publishes only under its own prefix.
type Command struct {
	Format string            `json:"kestrel"`
	Fleet  string            `json:"fleet"`
	Device string            `json:"device"`
	ID     string            `json:"id"`
	Name   string            `json:"name"`
	Args   map[string]string `json:"args,omitempty"`
	Reply  string            `json:"reply,omitempty"`
	Issued int64             `json:"issued"` // ms since the epoch
	KeyID  string            `json:"kid,omitempty"`
	Sig    []byte            `json:"sig,omitempty"`
	// Cosigs: further signatures, for remote.command_threshold.
	Cosigs []Signature `json:"cosigs,omitempty"`
}

// Signers are the key ids that signed the command, as they appear.
func (c *Command) Signers() []string { return signerIDs(signatures(c.KeyID, c.Sig, c.Cosigs)) }

func (c *Command) signed() []byte {
	var b bytes.Buffer
	b.WriteString(commandFormat + "\n" + c.Fleet + "\n" + c.Device + "\n" + c.ID + "\n" + c.Name + "\n" + c.Reply + "\n")
	b.WriteString(strconv.FormatInt(c.Issued, 10) + "\n")
	if len(c.Args) == 0 {
		b.WriteString("{}") // nil and empty must sign alike: omitempty drops both
	} else {
		args, _ := json.Marshal(c.Args) // map keys sorted: canonical
		b.Write(args)
	}
	return b.Bytes()
}

// SignCommand fills in the format, the issue time (if zero) and the key id,
// signs cmd and returns the payload to publish on the device's cmd topic.
// A nil key makes an unsigned command.
func SignCommand(priv ed25519.PrivateKey, cmd Command) ([]byte, error) {
	var keys []ed25519.PrivateKey
	if priv != nil {
		keys = append(keys, priv)
	}
	return SignCommandBy(keys, cmd)
}

// SignCommandBy signs with every key (distinct, at most MaxSignatures),
// for devices whose remote.command_threshold asks for N of them.
func SignCommandBy(keys []ed25519.PrivateKey, cmd Command) ([]byte, error) {
	cmd.Format = commandFormat
	if cmd.Issued == 0 {
		cmd.Issued = time.Now().UnixMilli()
	}
	if cmd.Reply == "" {
		cmd.Reply = "reply"
	}
	cmd.KeyID, cmd.Sig, cmd.Cosigs = "", nil, nil
	if err := cmd.check(); err != nil {
		return nil, fmt.Errorf("sign command: %w", err)
	}
	sigs, err := signAll(keys, cmd.signed())
	if err != nil {
		return nil, fmt.Errorf("sign command: %w", err)
	}
	if len(sigs) > 0 {
		cmd.KeyID, cmd.Sig, cmd.Cosigs = sigs[0].KeyID, sigs[0].Sig, sigs[1:]
	}
	b, err := json.Marshal(&cmd)
	if err == nil && len(b) > MaxCommand {
		return nil, fmt.Errorf("sign command: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxCommand)
	}
	return b, err
}

func (c *Command) check() error {
	if err := CheckName(c.Fleet); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := CheckName(c.Device); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if c.ID == "" || len(c.ID) > MaxIDLen || strings.ContainsAny(c.ID, "\n\x00") || !utf8.ValidString(c.ID) {
		return fmt.Errorf("bad request id %q", c.ID)
	}
	if err := CheckName(c.Name); err != nil {
		return fmt.Errorf("command name: %w", err)
	}
	if len(c.Args) > maxArgs {
		return fmt.Errorf("%d arguments, limit %d", len(c.Args), maxArgs)
	}
	for k, v := range c.Args {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("argument %q is not UTF-8", k)
		}
	}
	if err := CheckReplyChannel(c.Reply); err != nil {
		return err
	}
	return nil
}

// CheckReplyChannel accepts "reply" and "reply/NAME" (NAME one topic
// level, no wildcards): the device publishes replies only under its own
// topic tree.
func CheckReplyChannel(ch string) error {
	if ch == "reply" {
		return nil
	}
	rest, ok := strings.CutPrefix(ch, "reply/")
	if !ok || rest == "" || len(rest) > MaxIDLen || strings.ContainsAny(rest, "/+#\x00\n") || !utf8.ValidString(rest) {
		return fmt.Errorf("reply channel %q: want reply or reply/NAME", ch)
	}
	return nil
}

// DecodeCommand parses a command strictly. It checks the shape, not the
// signature.
func DecodeCommand(payload []byte) (*Command, error) {
	if len(payload) > MaxCommand {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxCommand)
	}
	var c Command
	if err := strictJSON(payload, &c); err != nil {
		return nil, err
	}
	if c.Format != commandFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrMalformed, c.Format, commandFormat)
	}
	if c.Reply == "" {
		c.Reply = "reply"
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := checkSigs(c.KeyID, c.Sig, c.Cosigs); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkSigs checks the shape of a message's signatures: the first, and
// cosigs only beside it, at most MaxSignatures in all.
func checkSigs(kid string, sig []byte, cosigs []Signature) error {
	if err := checkSigFields(kid, sig); err != nil {
		return err
	}
	if len(cosigs) > 0 && len(sig) == 0 {
		return fmt.Errorf("%w: cosignatures without a first signature", ErrMalformed)
	}
	if 1+len(cosigs) > MaxSignatures {
		return fmt.Errorf("%w: %d signatures, limit %d", ErrMalformed, 1+len(cosigs), MaxSignatures)
	}
	for _, c := range cosigs {
		if c.KeyID == "" || len(c.Sig) == 0 {
			return fmt.Errorf("%w: a cosignature without key id or signature", ErrMalformed)
		}
		if err := checkSigFields(c.KeyID, c.Sig); err != nil {
			return err
		}
	}
	return nil
}

func checkSigFields(kid string, sig []byte) error {
	if (kid == "") != (len(sig) == 0) {
		return fmt.Errorf("%w: key id and signature go together", ErrMalformed)
	}
	if len(sig) != 0 && len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrMalformed, len(sig))
	}
	if len(kid) > 64 {
		return fmt.Errorf("%w: key id too long", ErrMalformed)
	}
	return nil
}

func strictJSON(payload []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	return nil
}

// Key roles: what a trusted key may sign (config.KeyRoles).
const (
	RoleConfig   = "config"
	RoleCommands = "commands"
	RoleRelease  = "release"
)

// ErrWrongRole marks a signature by a trusted key that lacks the role.
var ErrWrongRole = errors.New("signed by a trusted key without the role")

// TrustedKey is one entry of the keyring.
type TrustedKey struct {
	Pub   ed25519.PublicKey
	Roles []string // sorted
	Entry string   // as in remote.trusted_keys ("ROLES:KEY" or "KEY")
}

// Keyring holds the trusted public keys by key id.
type Keyring map[string]TrustedKey

// NewKeyring parses remote.trusted_keys entries ("KEY" or "ROLES:KEY").
// The first entry for a key id wins.
func NewKeyring(keys []string) (Keyring, error) {
	kr := Keyring{}
	for i, k := range keys {
		pub, roles, err := config.ParseTrustedKey(k)
		if err != nil {
			return nil, fmt.Errorf("remote.trusted_keys[%d]: %w", i, err)
		}
		kid := KeyID(pub)
		if _, dup := kr[kid]; !dup {
			kr[kid] = TrustedKey{Pub: pub, Roles: roles, Entry: strings.TrimSpace(k)}
		}
	}
	return kr, nil
}

// ErrThreshold marks a message signed by fewer distinct trusted keys with
// the role than the device's threshold asks for.
var ErrThreshold = errors.New("too few signatures by distinct trusted keys with the role")

// verify checks the signatures on msg: at least threshold of them (at
// least 1) must be valid signatures by distinct trusted keys with the
// role; a key that signs twice counts once. A signature by a trusted key
// that does not verify refuses the message whole (it was tampered with);
// one by an unknown key or a key without the role counts for nothing.
// Unsigned messages pass only when requireSigned is false. It returns the
// key ids that counted.
func (kr Keyring) verify(sigs []Signature, msg []byte, requireSigned bool, role string, threshold int) ([]string, error) {
	if len(sigs) == 0 {
		if requireSigned {
			return nil, ErrUnsigned
		}
		return nil, nil
	}
	threshold = max(threshold, 1)
	var good []string
	var why []error
	for _, s := range sigs {
		k, ok := kr[s.KeyID]
		switch {
		case !ok:
			why = append(why, fmt.Errorf("%w (key id %s)", ErrUntrustedKey, s.KeyID))
		case !ed25519.Verify(k.Pub, msg, s.Sig):
			return nil, fmt.Errorf("%w (key id %s)", ErrBadSignature, s.KeyID)
		case !slices.Contains(k.Roles, role):
			why = append(why, fmt.Errorf("%w %s (key id %s has %s)", ErrWrongRole, role, s.KeyID, strings.Join(k.Roles, "+")))
		case slices.Contains(good, s.KeyID):
			// the same key again: it counts once
		default:
			good = append(good, s.KeyID)
		}
	}
	if len(good) >= threshold {
		return good, nil
	}
	if threshold == 1 && len(why) == 1 {
		return nil, why[0] // the one signature's own fault
	}
	err := fmt.Errorf("%w %s: %d of %d required (signed by %s)", ErrThreshold, role, len(good), threshold, strings.Join(signerIDs(sigs), ", "))
	return nil, errors.Join(append([]error{err}, why...)...)
}

// VerifyConfig checks an envelope's signature by a key with the config
// role (a threshold of 1).
func (kr Keyring) VerifyConfig(e *ConfigEnvelope, requireSigned bool) error {
	_, err := kr.VerifyConfigN(e, requireSigned, 1)
	return err
}

// VerifyConfigN checks that threshold distinct trusted keys with the
// config role signed the envelope, and returns them.
func (kr Keyring) VerifyConfigN(e *ConfigEnvelope, requireSigned bool, threshold int) ([]string, error) {
	return kr.verify(signatures(e.KeyID, e.Sig, e.Cosigs), e.signed(), requireSigned, RoleConfig, threshold)
}

// VerifyCommand checks a command's signature by a key with the commands
// role (a threshold of 1).
func (kr Keyring) VerifyCommand(c *Command, requireSigned bool) error {
	_, err := kr.VerifyCommandN(c, requireSigned, 1)
	return err
}

// VerifyCommandN checks that threshold distinct trusted keys with the
// commands role signed the command, and returns them.
func (kr Keyring) VerifyCommandN(c *Command, requireSigned bool, threshold int) ([]string, error) {
	return kr.verify(signatures(c.KeyID, c.Sig, c.Cosigs), c.signed(), requireSigned, RoleCommands, threshold)
}

// WithRole counts the keys that have the role.
func (kr Keyring) WithRole(role string) int {
	n := 0
	for _, k := range kr {
		if slices.Contains(k.Roles, role) {
			n++
		}
	}
	return n
}

// EncodePublicKey is the form of a public key in remote.trusted_keys.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}
