package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

type contextCmd struct {
	Add contextAddCmd `cmd:"" help:"Add a context: a name for several machines of one network."`
	Use contextUseCmd `cmd:"" help:"Make a context the current one: commands without --connect or --context use it."`
	Ls  contextLsCmd  `cmd:"" help:"List the contexts, their machines, and which are learned."`
	Rm  contextRmCmd  `cmd:"" help:"Remove a context."`
}

func (contextCmd) Help() string {
	return `A context names several machines of one network. A command tries them in order and uses the first whose agent answers; a machine that does not answer is named in one line on stderr. After a command, at most every 10 minutes, the CLI asks the network for its other machines and keeps them as learned targets after yours, so the context outlives the machine it was made with.

The contexts live in $XDG_CONFIG_HOME/uncloud/contexts.json (else ~/.config/uncloud), mode 0600.
Which agent a command talks to: --connect (or UNCLOUD_CONNECT), else --context (or UNCLOUD_CONTEXT), else the current context, else the local socket.`
}

// contextStore returns the user's store, or the test's.
func (g *globals) contextStore() (contextStore, error) {
	if g.contexts != nil {
		return *g.contexts, nil
	}
	return userContextStore()
}

type contextAddCmd struct {
	Name    string   `arg:"" help:"Context name (letters, digits, '.', '_', '-')."`
	Targets []string `arg:"" name:"target" help:"Machines, tried in this order: ssh://user@host[:port][/socket] (a ~/.ssh/config Host alias works as host), unix:///path or a socket path."`
	Use     bool     `help:"Also make it the current context."`
}

func (contextAddCmd) Help() string {
	return `Examples:
  uncloud context add prod ssh://root@203.0.113.10 ssh://root@198.51.100.7:2222
  uncloud context add home ssh://pi-1 --use          # pi-1: a Host in ~/.ssh/config
  uncloud context add here /run/uncloud/uncloud.sock`
}

func (c contextAddCmd) Run(g *globals) error {
	if err := checkContext(c.Name, c.Targets); err != nil {
		return err
	}
	store, err := g.contextStore()
	if err != nil {
		return err
	}
	err = store.update(func(f *contextFile) error {
		if f.find(c.Name) != nil {
			return fmt.Errorf("context %s exists; remove it first ('uncloud context rm %s')", c.Name, c.Name)
		}
		f.Contexts = append(f.Contexts, contextEntry{Name: c.Name, Targets: c.Targets})
		if c.Use {
			f.Current = c.Name
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("Context %s: %s\n", c.Name, strings.Join(c.Targets, ", "))
	if c.Use {
		fmt.Printf("Commands now use context %s.\n", c.Name)
	} else {
		fmt.Printf("Use it with --context %s, or for every command: uncloud context use %s\n", c.Name, c.Name)
	}
	return nil
}

type contextUseCmd struct {
	Name string `arg:"" optional:"" help:"Context name."`
	None bool   `help:"Use no context: commands go to the local socket unless --connect says otherwise."`
}

func (contextUseCmd) Help() string {
	return `Examples:
  uncloud context use prod
  uncloud context use --none      # back to this machine's socket`
}

func (c contextUseCmd) Run(g *globals) error {
	if c.None == (c.Name != "") {
		return fmt.Errorf("context use: give a context name, or --none")
	}
	store, err := g.contextStore()
	if err != nil {
		return err
	}
	err = store.update(func(f *contextFile) error {
		if c.Name != "" && f.find(c.Name) == nil {
			return fmt.Errorf("no context %q (see 'uncloud context ls')", c.Name)
		}
		f.Current = c.Name
		return nil
	})
	if err != nil {
		return err
	}
	if c.None {
		fmt.Println("Commands now use the local socket.")
	} else {
		fmt.Printf("Commands now use context %s.\n", c.Name)
	}
	return nil
}

type contextRmCmd struct {
	Name string `arg:"" help:"Context name."`
}

func (contextRmCmd) Help() string {
	return `Removing the current context makes commands use the local socket.
Example:
  uncloud context rm prod`
}

func (c contextRmCmd) Run(g *globals) error {
	store, err := g.contextStore()
	if err != nil {
		return err
	}
	wasCurrent := false
	err = store.update(func(f *contextFile) error {
		for i, e := range f.Contexts {
			if e.Name == c.Name {
				f.Contexts = append(f.Contexts[:i], f.Contexts[i+1:]...)
				if f.Current == c.Name {
					f.Current, wasCurrent = "", true
				}
				return nil
			}
		}
		return fmt.Errorf("no context %q (see 'uncloud context ls')", c.Name)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Removed context %s.\n", c.Name)
	if wasCurrent {
		fmt.Println("It was the current context: commands now use the local socket.")
	}
	return nil
}

type contextLsCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (contextLsCmd) Help() string {
	return `One line per machine: the user's first, in the order tried, then the learned ones (from: learned, with the machine's name).
Examples:
  uncloud context ls
  uncloud context ls -o json`
}

// contextJSON is a context in 'context ls -o json'.
type contextJSON struct {
	Name      string          `json:"name"`
	Current   bool            `json:"current"`
	NetworkID string          `json:"network_id,omitempty"`
	Targets   []string        `json:"targets"`
	Learned   []learnedTarget `json:"learned"`
	LearnedAt time.Time       `json:"learned_at,omitzero"`
}

func (c contextLsCmd) Run(g *globals) error {
	store, err := g.contextStore()
	if err != nil {
		return err
	}
	f, err := store.load()
	if err != nil {
		return err
	}
	if c.Output == "json" {
		out := []contextJSON{}
		for _, e := range f.Contexts {
			out = append(out, contextJSON{Name: e.Name, Current: e.Name == f.Current, Targets: e.Targets,
				Learned: append([]learnedTarget{}, e.Learned...), LearnedAt: e.LearnedAt, NetworkID: e.NetworkID})
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(f.Contexts) == 0 {
		fmt.Println("No contexts. Add one: uncloud context add NAME ssh://user@host …")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CURRENT\tNAME\tTARGET\tFROM")
	for _, e := range f.Contexts {
		cur := ""
		if e.Name == f.Current {
			cur = "*"
		}
		name := e.Name
		for _, t := range e.tries() {
			from := "user"
			if t.Learned {
				from = "learned: " + t.Machine
				if !e.LearnedAt.IsZero() {
					from += ", " + e.LearnedAt.Format(time.DateTime)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, name, t.Target, from)
			cur, name = "", ""
		}
	}
	return tw.Flush()
}
