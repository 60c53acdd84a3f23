package rootless

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// Missing names what this host lacks for rootless Docker for user (name
// and uid), each with how to get it; empty when everything is there.
// lookPath finds programs (exec.LookPath normally).
func (s System) Missing(user string, uid int, lookPath func(string) (string, error)) []string {
	var out []string
	for _, f := range []struct{ file, tool string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		if !s.hasRange(f.file, user, uid) {
			out = append(out, fmt.Sprintf("no subordinate range for user %s in %s (usermod %s 100000-165535 %s)", user, f.file, f.tool, user))
		}
	}
	for _, p := range []struct{ prog, pkg string }{
		{"rootlesskit", "rootlesskit"}, {"slirp4netns", "slirp4netns"},
		{"newuidmap", "uidmap"}, {"newgidmap", "uidmap"}, {"nsenter", "util-linux"},
	} {
		if _, err := lookPath(p.prog); err != nil {
			out = append(out, fmt.Sprintf("no %s in PATH (apt-get install %s)", p.prog, p.pkg))
		}
	}
	return out
}

// hasRange says whether file (subuid(5) format: name-or-id:start:count)
// gives user a non-empty range.
func (s System) hasRange(file, user string, uid int) bool {
	raw, err := os.ReadFile(s.path(file))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 || (f[0] != user && f[0] != strconv.Itoa(uid)) {
			continue
		}
		if n, err := strconv.ParseUint(f[2], 10, 32); err == nil && n > 0 {
			return true
		}
	}
	return false
}
