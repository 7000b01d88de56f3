package web

import (
	"strings"
	"testing"
)

// FuzzParseUsers: no users file panics the parser, and what it accepts
// holds only the two roles and bcrypt hashes.
func FuzzParseUsers(f *testing.F) {
	f.Add("olive:viewer:$2a$10$ErasjgYti0UE2313dDMfEOP/FKG7WWufavUmIRrDlQ4cF/ulvHEWG\n")
	f.Add("# comment\n\nsam:supervisor:$2a$10$ErasjgYti0UE2313dDMfEOP/FKG7WWufavUmIRrDlQ4cF/ulvHEWG")
	f.Add("a:admin:x\n:viewer:y\nb:viewer")
	f.Fuzz(func(t *testing.T, in string) {
		u, err := ParseUsers(strings.NewReader(in))
		if err != nil {
			return
		}
		for name, usr := range u {
			if name == "" || (usr.Role != RoleViewer && usr.Role != RoleSupervisor) {
				t.Fatalf("accepted %q as %+v", name, usr)
			}
		}
	})
}
