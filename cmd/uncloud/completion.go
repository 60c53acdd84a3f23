package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"

	"github.com/uncloud-mesh/uncloud/api"
)

// Shell completion. The scripts `uncloud completion SHELL` prints make the
// shell run uncloud itself with the command line in COMP_LINE (the
// protocol of bash's `complete -C`, which posener/complete implements);
// kongplete turns the kong model into posener's tree of subcommands and
// flags, so new commands and flags complete without a change here. What
// this file adds is the names only the agent knows: machines and
// services, asked with a short timeout and dropped silently on any error,
// so a TAB never hangs or prints an error when no agent answers; and the
// user's context names, read from their file.

// completionLookup bounds one question to the agent during a TAB: a local
// socket answers in milliseconds; SSH needs a handshake.
const completionLookup = 2 * time.Second

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (completionCmd) Help() string {
	return `Prints a script that makes the shell complete uncloud's commands, flags, and the machine and service names the agent knows. Load it:
  bash:  source <(uncloud completion bash)            (e.g. in ~/.bashrc)
  zsh:   source <(uncloud completion zsh)             (e.g. in ~/.zshrc)
  fish:  uncloud completion fish > ~/.config/fish/completions/uncloud.fish
The script names this binary's path: print it again after moving the binary.`
}

func (c completionCmd) Run() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: find this binary's path: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return fmt.Errorf("completion: find this binary's path: %w", err)
	}
	return writeCompletionScript(os.Stdout, c.Shell, bin)
}

// writeCompletionScript writes shell's script that asks bin for completions.
func writeCompletionScript(w io.Writer, shell, bin string) error {
	var script string
	switch shell {
	case "bash":
		// -o default: file names when uncloud offers nothing (compose
		// files, paths after --).
		script = `# uncloud completion for bash; load with: source <(uncloud completion bash)
complete -o default -C BIN uncloud
`
	case "zsh":
		// zsh runs bash's complete -C through bashcompinit.
		script = `# uncloud completion for zsh; load with: source <(uncloud completion zsh)
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit }
autoload -U +X bashcompinit && bashcompinit
complete -o default -C BIN uncloud
`
	case "fish":
		// fish has no complete -C: set COMP_LINE as bash would, with a
		// trailing space when the cursor starts a new word.
		script = `# uncloud completion for fish; save as ~/.config/fish/completions/uncloud.fish
function __uncloud_complete
    set -lx COMP_LINE (commandline -cp)
    set -l current (commandline -ct)
    if test -z "$current"
        set COMP_LINE "$COMP_LINE "
    end
    BIN
end
complete -c uncloud -f -a '(__uncloud_complete)'
`
	default:
		return fmt.Errorf("completion: shell %q: want bash, zsh or fish", shell)
	}
	_, err := io.WriteString(w, strings.ReplaceAll(script, "BIN", shellQuote(bin)))
	return err
}

// shellQuote quotes s for bash, zsh and fish alike: single quotes, and a
// single quote inside closed, escaped and reopened.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// completeIfAsked answers a shell's completion request (COMP_LINE set)
// on out and says whether it did; the caller then exits.
func completeIfAsked(parser *kong.Kong, names nameLister, out io.Writer) bool {
	if os.Getenv("COMP_LINE") == "" {
		return false
	}
	cmd, err := completionTree(parser, names)
	if err != nil {
		// A model kongplete cannot walk is a bug here, not the user's;
		// the shell shows nothing rather than an error in the prompt.
		complete.Log("completion tree: %v", err)
		return true
	}
	c := complete.New(parser.Model.Name, cmd)
	c.Out = out
	return c.Complete()
}

// nameLister is what completion asks the agent: the names of machines
// and services. Errors mean "offer nothing".
type nameLister interface {
	Machines(ctx context.Context, connect string) ([]string, error)
	Services(ctx context.Context, connect string) ([]string, error)
}

// Which positional arguments take which names. A command listed here
// that the CLI no longer has fails TestCompletionTable.
var (
	serviceArgCommands = [][]string{
		{"scale"}, {"rm"}, {"logs"}, {"exec"}, {"inspect"}, {"history"},
		{"rollback"}, {"stop"}, {"start"},
	}
	machineArgCommands = [][]string{
		{"machine", "rm"}, {"machine", "rename"},
		{"machine", "role", "add"}, {"machine", "role", "rm"},
		{"machine", "label", "add"}, {"machine", "label", "rm"},
	}
)

// contextArgCommands take a context name first.
var contextArgCommands = [][]string{{"context", "use"}, {"context", "rm"}}

// contextNames are the user's contexts; none on any error.
func contextNames(complete.Args) []string {
	s, err := userContextStore()
	if err != nil {
		return nil
	}
	f, err := s.load()
	if err != nil {
		complete.Log("contexts: %v", err)
		return nil
	}
	var names []string
	for _, c := range f.Contexts {
		names = append(names, c.Name)
	}
	return names
}

// completionTree is kongplete's tree for the CLI with the agent's names
// put in: the first positional argument of the commands above, and every
// --machine/-m flag.
func completionTree(parser *kong.Kong, names nameLister) (complete.Command, error) {
	root, err := kongplete.Command(parser)
	if err != nil {
		return complete.Command{}, fmt.Errorf("completion tree: %w", err)
	}
	machines := namePredictor(names.Machines)
	services := namePredictor(names.Services)
	setFlagPredictor(parser.Model.Node, root, "machine", machines)
	contexts := complete.PredictFunc(contextNames) // the user's file, not the agent's
	setFlagPredictor(parser.Model.Node, root, "context", contexts)
	for _, path := range contextArgCommands {
		node := findNode(parser.Model.Node, path)
		if node == nil {
			return complete.Command{}, fmt.Errorf("completion: no command %q", strings.Join(path, " "))
		}
		if root, err = withArgs(root, path, firstArgPredictor(node, contexts)); err != nil {
			return complete.Command{}, err
		}
	}
	for _, set := range []struct {
		paths [][]string
		p     complete.Predictor
	}{{serviceArgCommands, services}, {machineArgCommands, machines}} {
		for _, path := range set.paths {
			node := findNode(parser.Model.Node, path)
			if node == nil {
				return complete.Command{}, fmt.Errorf("completion: no command %q", strings.Join(path, " "))
			}
			if root, err = withArgs(root, path, firstArgPredictor(node, set.p)); err != nil {
				return complete.Command{}, err
			}
		}
	}
	return root, nil
}

// namePredictor asks the agent named by the command line's --connect
// (else UNCLOUD_CONNECT, else the local socket) for names. The lookup
// runs beside a timer rather than only under a context, so a dialer that
// does not honour the context (an SSH handshake) cannot hold the TAB; a
// lookup left behind ends with the process, right after the answer.
func namePredictor(list func(context.Context, string) ([]string, error)) complete.Predictor {
	return complete.PredictFunc(func(complete.Args) []string {
		ctx, cancel := context.WithTimeout(context.Background(), completionLookup)
		defer cancel()
		got := make(chan []string, 1)
		go func() {
			// a.All holds only the words after the subcommand; --connect
			// may come before it, so read the shell's whole line.
			names, err := list(ctx, flagValue(strings.Fields(os.Getenv("COMP_LINE")), "connect", "UNCLOUD_CONNECT"))
			if err != nil {
				complete.Log("names from the agent: %v", err)
			}
			got <- names
		}()
		select {
		case names := <-got:
			return names
		case <-ctx.Done():
			complete.Log("names from the agent: %v", ctx.Err())
			return nil
		}
	})
}

// flagValue finds --flag in the words typed so far (as "--flag=v" or
// "--flag v"), else the environment variable env, else "". Completion
// runs before kong parses anything, so the words are all it has.
func flagValue(words []string, flag, env string) string {
	v := os.Getenv(env)
	for i, w := range words {
		if after, ok := strings.CutPrefix(w, "--"+flag+"="); ok {
			v = after
		} else if w == "--"+flag && i+1 < len(words) {
			v = words[i+1]
		}
	}
	return v
}

// setFlagPredictor gives p to every flag named name (and its short form)
// of node and the commands under it; c is kongplete's command for node.
func setFlagPredictor(node *kong.Node, c complete.Command, name string, p complete.Predictor) {
	for _, f := range node.Flags {
		if f.Name != name {
			continue
		}
		c.GlobalFlags["--"+f.Name] = p // kongplete puts a command's flags there
		if f.Short != 0 {
			c.GlobalFlags["-"+string(f.Short)] = p
		}
	}
	for _, child := range node.Children {
		if sub, ok := c.Sub[child.Name]; ok {
			setFlagPredictor(child, sub, name, p) // Sub holds values, but their maps are shared
		}
	}
}

// withArgs returns c with the command at path given p for its arguments.
func withArgs(c complete.Command, path []string, p complete.Predictor) (complete.Command, error) {
	if len(path) == 0 {
		c.Args = p
		return c, nil
	}
	sub, ok := c.Sub[path[0]]
	if !ok {
		return c, fmt.Errorf("completion: no command %q in kongplete's tree", path[0])
	}
	sub, err := withArgs(sub, path[1:], p)
	if err != nil {
		return c, err
	}
	c.Sub[path[0]] = sub
	return c, nil
}

func findNode(n *kong.Node, path []string) *kong.Node {
	for _, name := range path {
		var next *kong.Node
		for _, child := range n.Children {
			if child.Name == name {
				next = child
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// firstArgPredictor offers p's names for node's first positional argument
// (every position when it takes several, like rm's services) and nothing
// for the ones after it. A word counts as a position unless it is a flag
// or a non-bool flag's value.
func firstArgPredictor(node *kong.Node, p complete.Predictor) complete.Predictor {
	valueFlags := map[string]bool{}
	for _, group := range node.AllFlags(false) { // the node's and its parents' (--connect)
		for _, f := range group {
			if f.Value.IsBool() {
				continue
			}
			valueFlags["--"+f.Name] = true
			if f.Short != 0 {
				valueFlags["-"+string(f.Short)] = true
			}
		}
	}
	cumulative := len(node.Positional) > 0 && node.Positional[0].IsCumulative()
	return complete.PredictFunc(func(a complete.Args) []string {
		pos := 0
		for i, w := range a.Completed {
			if strings.HasPrefix(w, "-") || i > 0 && valueFlags[a.Completed[i-1]] {
				continue
			}
			pos++
		}
		if pos == 0 || cumulative {
			names := p.Predict(a)
			if cumulative { // rm a b: offer each name once
				names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(a.Completed, n) })
			}
			return names
		}
		return nil
	})
}

// agentNames asks the agent through the local API, like every command.
type agentNames struct{}

func (agentNames) Machines(ctx context.Context, connect string) ([]string, error) {
	return askNames(ctx, connect, func(ctx context.Context, c *api.Client) ([]string, error) {
		ms, err := c.Machines(ctx)
		var names []string
		for _, m := range ms {
			names = append(names, m.Name)
		}
		return names, err
	})
}

func (agentNames) Services(ctx context.Context, connect string) ([]string, error) {
	return askNames(ctx, connect, func(ctx context.Context, c *api.Client) ([]string, error) {
		ss, err := c.Services(ctx)
		var names []string
		for _, s := range ss {
			names = append(names, s.Name)
		}
		return names, err
	})
}

func askNames(ctx context.Context, connect string, call func(context.Context, *api.Client) ([]string, error)) ([]string, error) {
	// A context's fall-through notes would land in the prompt: dropped.
	g := &globals{Connect: connect, Context: flagValue(strings.Fields(os.Getenv("COMP_LINE")), "context", "UNCLOUD_CONTEXT"), Stderr: io.Discard}
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return call(ctx, c)
}
