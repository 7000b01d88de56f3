package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/kestrel-edge/kestrel/platform"
	"github.com/kestrel-edge/kestrel/transport/fleet"
)

// Consultation and disclosure of personal data (DPA 2018 s.62): every
// command that reads the platform database logs who read what, when and
// how it ended, in the database's consultations chain, before it shows
// anything. A read whose consultation cannot be logged is refused.
//
// Commands that read the database take operatorFlags and call
// startConsultation before the read and finish after it (track, gaps,
// devices, status --db, audit); logConsultation is the one-row form.

// Consultation is what a command says about its read; the operator is
// filled in from the flags, $KESTREL_OPERATOR or the OS user.
type Consultation = platform.Consultation

// operatorFlags are the consultation flags of a database-reading command.
type operatorFlags struct {
	name    *string
	signKey *string
}

func addOperatorFlags(fs *flag.FlagSet) *operatorFlags {
	return &operatorFlags{
		name:    fs.String("operator", "", "who is reading, for the consultation log (default: $KESTREL_OPERATOR, else the OS user)"),
		signKey: fs.String("sign-key", "", "the operator's signing key FILE, whose key id the consultation log records (default: $KESTREL_SIGNING_KEY if set)"),
	}
}

// identity is the operator and the key id of the signing key given, if any.
func (o *operatorFlags) identity() (name, kid string, err error) {
	name = strings.TrimSpace(*o.name)
	if name == "" {
		name = strings.TrimSpace(os.Getenv("KESTREL_OPERATOR"))
	}
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = "os:" + u.Username
		}
	}
	if name == "" {
		return "", "", fmt.Errorf("%w: no operator: give --operator or $KESTREL_OPERATOR", errUsage)
	}
	path := *o.signKey
	if path == "" {
		path = os.Getenv("KESTREL_SIGNING_KEY")
	}
	if path != "" {
		keys, err := loadSigningKeys([]string{path})
		if err != nil {
			return "", "", err
		}
		kid = fleet.KeyID(keys[0].Public().(ed25519.PublicKey))
	}
	return name, kid, nil
}

// logConsultation writes one consultation row (the operator defaults as
// operatorFlags.identity does, without a key id).
func logConsultation(ctx context.Context, db *platform.Store, c Consultation) error {
	if c.Operator == "" {
		name, _, err := (&operatorFlags{name: new(string), signKey: new(string)}).identity()
		if err != nil {
			return err
		}
		c.Operator = name
	}
	if _, err := db.LogConsultation(ctx, c); err != nil {
		return fmt.Errorf("consultation log: %w (the read is refused: s.62 needs it logged)", err)
	}
	return nil
}

// consultation is a read in progress: its request is logged.
type consultation struct {
	ctx context.Context
	db  *platform.Store
	c   Consultation
}

// startConsultation logs the request (outcome "requested") before the
// read; finish logs how it ended.
func startConsultation(s stdio, db *platform.Store, op *operatorFlags, c Consultation) (*consultation, error) {
	name, kid, err := op.identity()
	if err != nil {
		return nil, err
	}
	c.Operator, c.KeyID, c.Outcome = name, kid, "requested"
	if err := logConsultation(s.ctx, db, c); err != nil {
		return nil, err
	}
	return &consultation{ctx: s.ctx, db: db, c: c}, nil
}

// finish logs the outcome ("ok: what was returned", or the error) and
// returns readErr, or the logging error.
func (k *consultation) finish(readErr error, returned string) error {
	c := k.c
	c.Time = 0
	c.Outcome = "ok"
	if returned != "" {
		c.Outcome += ": " + returned
	}
	if readErr != nil {
		c.Outcome = "error: " + readErr.Error()
	}
	// The outcome is logged even if the command was interrupted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(k.ctx), 10*time.Second)
	defer cancel()
	return errors.Join(readErr, logConsultation(ctx, k.db, c))
}

// timeRange is a consultation's range in ms (0: open).
func timeRange(from, to time.Time) (int64, int64) {
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixMilli()
	}
	return ms(from), ms(to)
}
