package main

import (
	"slices"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/uncloud-mesh/uncloud/api"
)

func parseCLI(t *testing.T, args ...string) cli {
	t.Helper()
	var c cli
	p, err := kong.New(&c, kong.Name("uncloud"), kong.Vars{"socket": api.DefaultSocket, "datadir": "/var/lib/uncloud"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return c
}

// TestExecFlags: docker exec's flags, combined short flags included, and
// the command's own flags left to it.
func TestExecFlags(t *testing.T) {
	c := parseCLI(t, "exec", "-it", "-m", "m2", "-u", "0:0", "-w", "/srv", "-e", "A=1,2", "-e", "B=x", "web", "sh", "-c", "ls -l")
	e := c.Exec
	if !e.Interactive || !e.TTY || e.Machine != "m2" || e.User != "0:0" || e.Workdir != "/srv" ||
		!slices.Equal(e.Env, []string{"A=1,2", "B=x"}) || e.Service != "web" || !slices.Equal(e.Cmd, []string{"sh", "-c", "ls -l"}) {
		t.Errorf("parsed %+v", e)
	}
	c = parseCLI(t, "exec", "--container", "web-1", "web", "/echoserver", "get", "-x")
	if e := c.Exec; e.Interactive || e.TTY || e.Container != "web-1" || !slices.Equal(e.Cmd, []string{"/echoserver", "get", "-x"}) {
		t.Errorf("parsed %+v", e)
	}
	c = parseCLI(t, "exec", "-i", "web", "cat")
	if e := c.Exec; !e.Interactive || e.TTY {
		t.Errorf("-i alone: %+v", e)
	}
}

func TestTermSize(t *testing.T) {
	if _, _, ok := termSize(-1); ok {
		t.Error("a size without a terminal")
	}
}

func TestLogsFlags(t *testing.T) {
	c := parseCLI(t, "logs", "web", "db", "-n", "20", "-t", "-f", "--since", "10m", "--until", "1m")
	l := c.Logs
	if !slices.Equal(l.Services, []string{"web", "db"}) || l.Tail != "20" || !l.Timestamps || !l.Follow || l.Since != "10m" || l.Until != "1m" {
		t.Errorf("parsed %+v", l)
	}
	if l := parseCLI(t, "logs").Logs; len(l.Services) != 0 || l.Tail != "all" {
		t.Errorf("no service: %+v", l)
	}
}
