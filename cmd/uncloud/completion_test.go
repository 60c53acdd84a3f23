package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestMain lets a test run this test binary as the uncloud command (for a
// shell that completes through it, as it would through the real binary).
func TestMain(m *testing.M) {
	if os.Getenv("UNCLOUD_TEST_AS_CLI") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCompletionInFish: a real fish loads the script and completes
// through this binary, which asks a real local API for the names. (bash
// and zsh complete only in an interactive line editor; their scripts are
// parsed above and the protocol they speak is TestCompletionFromAgent's.)
func TestCompletionInFish(t *testing.T) {
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Skip("fish not installed (scripts/test installs it)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var script bytes.Buffer
	if err := writeCompletionScript(&script, "fish", self); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "uncloud.fish")
	if err := os.WriteFile(file, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := serveAgent(t, fakeNamesAgent{})
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"uncloud mach", []string{"machine"}},
		{"uncloud --connect " + sock + " scale ", []string{"db.shop", "web"}},
		{"uncloud --connect " + sock + " machine rm v", []string{"vps-2"}},
	} {
		cmd := exec.Command(fish, "--no-config", "-c", "source "+file+"; complete -C "+shellQuote(tc.line))
		cmd.Env = append(os.Environ(), "UNCLOUD_TEST_AS_CLI=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish, %q: %v\n%s", tc.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if w, _, _ := strings.Cut(l, "\t"); w != "" { // fish adds a tab and a description
				got = append(got, w)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("fish completes %q with %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCompletionScriptsParse checks each printed script with its own
// shell's parser, with a binary path that needs quoting.
func TestCompletionScriptsParse(t *testing.T) {
	bin := "/opt/it's here/uncloud"
	for _, tc := range []struct {
		shell string
		check []string // the parser's arguments before the script's path
	}{
		{"bash", []string{"-n"}},
		{"zsh", []string{"-n"}},
		{"fish", []string{"--no-execute"}},
	} {
		t.Run(tc.shell, func(t *testing.T) {
			var script bytes.Buffer
			if err := writeCompletionScript(&script, tc.shell, bin); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(script.String(), `'/opt/it'\''s here/uncloud'`) {
				t.Errorf("script does not call the binary by its quoted path:\n%s", script.String())
			}
			path, err := exec.LookPath(tc.shell)
			if err != nil {
				t.Skipf("%s not installed (scripts/test installs it): its parser's check skipped", tc.shell)
			}
			file := filepath.Join(t.TempDir(), "uncloud."+tc.shell)
			if err := os.WriteFile(file, script.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(path, append(tc.check, file)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s\nscript:\n%s", tc.shell, strings.Join(tc.check, " "), err, out, script.String())
			}
		})
	}
	if err := writeCompletionScript(new(bytes.Buffer), "tcsh", bin); err == nil {
		t.Error("tcsh: no error")
	}
}

// TestCompletionBashRegisters sources the bash script in a real bash and
// asks bash what it will run for uncloud: the -C command.
func TestCompletionBashRegisters(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	var script bytes.Buffer
	if err := writeCompletionScript(&script, "bash", "/usr/local/bin/uncloud"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-c", script.String()+"\ncomplete -p uncloud").CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "-C '/usr/local/bin/uncloud' uncloud") && !strings.Contains(string(out), "-C /usr/local/bin/uncloud uncloud") {
		t.Errorf("complete -p uncloud = %q", out)
	}
}

// fakeNamesAgent answers the two calls completion makes, behind the real
// local API handler; any other call reaches a nil interface and panics.
type fakeNamesAgent struct {
	api.Backend
	api.ContainerBackend
}

func (fakeNamesAgent) Machines(context.Context) ([]api.MachineInfo, error) {
	return []api.MachineInfo{{Name: "pi-1", ID: "id1"}, {Name: "vps-2", ID: "id2"}}, nil
}

func (fakeNamesAgent) Services(context.Context) ([]api.ServiceInfo, error) {
	return []api.ServiceInfo{{Name: "web", Project: "default"}, {Name: "db.shop", Project: "shop"}}, nil
}

// completeLine runs the completion the shell asks for with COMP_LINE, in
// process, and returns the offered words sorted.
func completeLine(t *testing.T, line string) []string {
	t.Helper()
	t.Setenv("COMP_LINE", line)
	t.Setenv("COMP_POINT", "")
	var c cli
	var out bytes.Buffer
	if !completeIfAsked(newParser(&c), agentNames{}, &out) {
		t.Fatalf("%q: not treated as a completion request", line)
	}
	words := strings.Fields(out.String())
	slices.Sort(words)
	return words
}

func TestCompletionFromAgent(t *testing.T) {
	sock := serveAgent(t, fakeNamesAgent{})
	t.Setenv("UNCLOUD_CONNECT", "/nonexistent/from-env.sock") // the line's --connect wins
	services := []string{"db.shop", "web"}
	machines := []string{"pi-1", "vps-2"}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"uncloud sc", []string{"scale"}},
		{"uncloud machine r", []string{"rename", "rm", "role"}},
		{"uncloud --connect SOCK scale ", services},
		{"uncloud --connect=SOCK scale w", []string{"web"}},
		{"uncloud scale --connect SOCK ", services},             // a flag's value is not the service
		{"uncloud --connect SOCK scale web ", nil},              // replicas: no names
		{"uncloud --connect SOCK rm web ", []string{"db.shop"}}, // several services, each once
		{"uncloud --connect SOCK logs ", services},
		{"uncloud --connect SOCK inspect ", services},
		{"uncloud --connect SOCK exec ", services},
		{"uncloud --connect SOCK rollback ", services},
		{"uncloud --connect SOCK stop ", services},
		{"uncloud --connect SOCK start ", services},
		{"uncloud --connect SOCK history ", services},
		{"uncloud --connect SOCK machine rm ", machines},
		{"uncloud --connect SOCK machine rename p", []string{"pi-1"}},
		{"uncloud --connect SOCK machine rename pi-1 ", nil}, // the new name is the user's
		{"uncloud --connect SOCK machine role add ", machines},
		{"uncloud --connect SOCK machine label rm ", machines},
		{"uncloud --connect SOCK run -m ", machines},
		{"uncloud --connect SOCK run --machine=", machines},
		{"uncloud --connect SOCK exec -m v", []string{"vps-2"}},
		{"uncloud --connect SOCK image ls --machine ", machines},
	} {
		line := strings.ReplaceAll(tc.line, "SOCK", sock)
		if got := completeLine(t, line); !slices.Equal(got, tc.want) {
			t.Errorf("%q offers %q, want %q", tc.line, got, tc.want)
		}
	}

	// The environment's target, as kong reads it, when the line has none.
	t.Setenv("UNCLOUD_CONNECT", sock)
	if got := completeLine(t, "uncloud scale "); !slices.Equal(got, services) {
		t.Errorf("with UNCLOUD_CONNECT: %q, want %q", got, services)
	}
}

// TestCompletionOfContexts: context names from the user's file for
// 'context use|rm' and --context.
func TestCompletionOfContexts(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("UNCLOUD_CONNECT", "/nonexistent/agent.sock")
	s, err := userContextStore()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.save(contextFile{Contexts: []contextEntry{{Name: "prod", Targets: []string{"/a.sock"}}, {Name: "home", Targets: []string{"/b.sock"}}}}); err != nil {
		t.Fatal(err)
	}
	both := []string{"home", "prod"}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"uncloud context use ", both},
		{"uncloud context rm p", []string{"prod"}},
		{"uncloud context rm prod ", nil},
		{"uncloud --context ", both},
		{"uncloud ps --context=h", []string{"home"}},
	} {
		if got := completeLine(t, tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("%q offers %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCompletionWithoutAgent: no agent, or one that never answers, gives
// no names and no error text for the shell to show.
func TestCompletionWithoutAgent(t *testing.T) {
	silent := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts, reads nothing, answers nothing
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, target := range []string{"/nonexistent/agent.sock", silent, "ssh://"} {
		if got := completeLine(t, "uncloud --connect "+target+" scale "); len(got) != 0 {
			t.Errorf("%s: offers %q, want nothing", target, got)
		}
	}
	// Commands and flags still complete.
	if got := completeLine(t, "uncloud --connect /nonexistent/agent.sock st"); !slices.Equal(got, []string{"start", "state", "status", "stop"}) {
		t.Errorf("st: %q", got)
	}
}

// TestCompletionTable: every command the table names exists and takes
// names first (a renamed command fails here, not silently at a TAB).
func TestCompletionTable(t *testing.T) {
	var c cli
	p := newParser(&c)
	if _, err := completionTree(p, agentNames{}); err != nil {
		t.Fatal(err)
	}
	for _, path := range slices.Concat(serviceArgCommands, machineArgCommands, contextArgCommands) {
		n := findNode(p.Model.Node, path)
		if n == nil || len(n.Positional) == 0 {
			t.Errorf("%q: no such command, or it takes no argument", path)
			continue
		}
		if name := n.Positional[0].Name; !strings.Contains(name, "service") && name != "name" {
			t.Errorf("%q: first argument is %q, not a service or machine name", path, name)
		}
	}
}

func TestFlagValue(t *testing.T) {
	t.Setenv("UNCLOUD_TEST_FLAG", "from-env")
	for _, c := range []struct {
		line, want string
	}{
		{"uncloud ls", "from-env"},
		{"uncloud --connect ssh://a ls", "ssh://a"},
		{"uncloud --connect=ssh://b ls", "ssh://b"},
		{"uncloud --connect=ssh://b --connect ssh://c ls", "ssh://c"},
		{"uncloud ls --connect", "from-env"}, // no value typed yet
		{"uncloud --connection x ls", "from-env"},
	} {
		if got := flagValue(strings.Fields(c.line), "connect", "UNCLOUD_TEST_FLAG"); got != c.want {
			t.Errorf("flagValue(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}
