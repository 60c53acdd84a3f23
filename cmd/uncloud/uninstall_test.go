package main

import (
	"strings"
	"testing"
)

func TestIsAgentCommand(t *testing.T) {
	for _, tc := range []struct {
		argv string
		want bool
	}{
		{"/usr/local/bin/uncloud agent", true},
		{"/usr/local/bin/uncloud --connect /run/uncloud/uncloud.sock agent --data-dir /var/lib/uncloud", true},
		{"uncloud --log-level debug agent", true},
		{"uncloud --log-level=debug agent --userspace", true},
		{"uncloud logs agent", false},             // a service named agent
		{"uncloud --connect agent status", false}, // a socket named agent
		{"uncloud --log-level debug init --name m1 --foreground", true},
		{"uncloud join --foreground TOKEN", true},
		{"uncloud join TOKEN", false}, // starts one in the background and exits
		{"uncloud", false},
		{"/usr/bin/vim agent", false},
		{"uncloud uninstall --yes", false},
	} {
		if got := isAgentCommand(strings.Fields(tc.argv)); got != tc.want {
			t.Errorf("isAgentCommand(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}
