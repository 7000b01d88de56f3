package web

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Role is what a user may do.
type Role string

const (
	// RoleViewer sees the pages.
	RoleViewer Role = "viewer"
	// RoleSupervisor also acknowledges emergencies.
	RoleSupervisor Role = "supervisor"
)

// User is one line of the users file.
type User struct {
	Name string
	Role Role
	hash []byte
}

// Users is the set of users who may log in.
type Users map[string]User

// maxUsersFile bounds the users file.
const maxUsersFile = 1 << 20

// LoadUsers reads a users file: one "name:role:bcrypt-hash" a line, "#"
// comments and blank lines ignored. The file must not be readable by
// group or others.
func LoadUsers(path string) (Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("users file %s: mode %v is readable by others; chmod 600 it", path, fi.Mode().Perm())
	}
	return ParseUsers(io.LimitReader(f, maxUsersFile))
}

// ParseUsers reads the users file format of LoadUsers.
func ParseUsers(r io.Reader) (Users, error) {
	u := Users{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok1 := strings.Cut(line, ":")
		role, hash, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || name == "" {
			return nil, fmt.Errorf("users file line %d: want name:role:bcrypt-hash", n)
		}
		if Role(role) != RoleViewer && Role(role) != RoleSupervisor {
			return nil, fmt.Errorf("users file line %d: role %q: want viewer or supervisor", n, role)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("users file line %d: user %q: not a bcrypt hash: %w", n, name, err)
		}
		if _, dup := u[name]; dup {
			return nil, fmt.Errorf("users file line %d: user %q twice", n, name)
		}
		u[name] = User{Name: name, Role: Role(role), hash: []byte(hash)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	if len(u) == 0 {
		return nil, fmt.Errorf("users file: no users")
	}
	return u, nil
}

// dummyHash keeps a login for an unknown user as slow as a known one.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("kestrel-no-such-user"), bcrypt.DefaultCost)

// Check returns the user if the password matches.
func (u Users) Check(name, password string) (User, bool) {
	usr, ok := u[name]
	h := usr.hash
	if !ok {
		h = dummyHash
	}
	if bcrypt.CompareHashAndPassword(h, []byte(password)) != nil || !ok {
		return User{}, false
	}
	return usr, true
}

// UserLine checks name, role and password and makes their users-file line.
func UserLine(name string, role Role, password string) (string, error) {
	if name == "" || strings.ContainsAny(name, ": \t\n#") {
		return "", fmt.Errorf("user name %q: want a name without ':', spaces or '#'", name)
	}
	if role != RoleViewer && role != RoleSupervisor {
		return "", fmt.Errorf("role %q: want viewer or supervisor", role)
	}
	if len(password) < 8 || len(password) > 72 {
		return "", fmt.Errorf("password: want 8 to 72 bytes (bcrypt)")
	}
	return HashLine(name, role, password)
}

// HashLine makes a users-file line for name, role and password.
func HashLine(name string, role Role, password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	return name + ":" + string(role) + ":" + string(h), nil
}

// OneTimeLogin makes a users set of one, held in memory only, with a fresh
// random password (128 bits, base64url): kestrel demo's login, shown once
// to whoever started it and gone when the process ends.
func OneTimeLogin(name string, role Role) (Users, string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, "", fmt.Errorf("one-time login: %w", err)
	}
	pw := base64.RawURLEncoding.EncodeToString(b)
	line, err := UserLine(name, role, pw)
	if err != nil {
		return nil, "", err
	}
	u, err := ParseUsers(strings.NewReader(line))
	if err != nil {
		return nil, "", err
	}
	return u, pw, nil
}
