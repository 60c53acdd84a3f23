package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// strayAgents are the pids of `uncloud agent` processes in this network
// namespace other than skip: an agent serving another socket, or one
// whose socket is gone. Agents of other network namespaces (containers,
// test labs) are someone else's and are never listed.
func strayAgents(skip int) []int {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == skip || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err != nil || ns != self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !alive(pid) {
			continue
		}
		if isAgentCommand(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

// isAgentCommand reports whether argv runs an agent: the program is
// uncloud and its first command word is agent (not, say, `uncloud logs
// agent`), or init or join with --foreground.
func isAgentCommand(argv []string) bool {
	if len(argv) < 2 || !strings.HasPrefix(filepath.Base(argv[0]), "uncloud") {
		return false
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") && (a == "--connect" || a == "--log-level") {
				i++ // its value
			}
			continue
		}
		switch a {
		case "agent":
			return true
		case "init", "join":
			return slices.Contains(argv[i+1:], "--foreground")
		}
		return false
	}
	return false
}
