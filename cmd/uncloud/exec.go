package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/uncloud-mesh/uncloud/api"
)

// `uncloud exec`: a command in a container of a service, wherever it
// runs, over the exec stream (api.ExecAttach): its output as it comes,
// with -i this terminal's input, with -t a terminal of its own (this one
// goes raw and its size follows), and its exit code as ours.

type execCmd struct {
	Interactive bool     `short:"i" help:"Send standard input to the command (until end of file)."`
	TTY         bool     `short:"t" name:"tty" help:"Give the command a terminal: this one goes raw, and its size follows."`
	Container   string   `help:"Container name; default: a running one, this machine's first."`
	Machine     string   `short:"m" help:"Use the service's running container on this machine (name or ID)."`
	User        string   `short:"u" help:"User to run the command as: name or UID[:GID]."`
	Workdir     string   `short:"w" help:"Working directory of the command."`
	Env         []string `short:"e" help:"Environment variable KEY=VALUE. Repeatable." sep:"none"`
	Service     string   `arg:"" help:"Service name."`
	Cmd         []string `arg:"" passthrough:"" help:"Command and arguments."`
}

func (execCmd) Help() string {
	return `Without -i the command reads end of file; without -t its standard output
and error stay apart. Its exit code is uncloud's. If this side goes away
(Ctrl-C without -t, a dropped SSH connection), the command is ended too.

Examples:
  uncloud exec -it web sh
  uncloud exec -it -m m2 db psql -U app
  uncloud exec -i web sh -c 'cat > /tmp/x' < x
  uncloud exec -u 0 -w /srv -e DEBUG=1 web ./migrate`
}

// execStartTimeout bounds reaching the agent and starting the command;
// the command itself runs as long as it does.
const execStartTimeout = time.Minute

func (c execCmd) Run(g *globals) error {
	code, target, err := c.run(g)
	if err != nil {
		return err
	}
	if code != 0 {
		if !c.TTY {
			// With a terminal, the command said what it had to say.
			fmt.Fprintf(os.Stderr, "uncloud: %s in %s@%s exited with %d\n", strings.Join(c.Cmd, " "), target.Container, target.Machine, code)
		}
		os.Exit(code)
	}
	return nil
}

func (c execCmd) run(g *globals) (int, api.ExecTarget, error) {
	in, out := int(os.Stdin.Fd()), int(os.Stdout.Fd())
	if c.TTY && c.Interactive && !term.IsTerminal(in) {
		return 0, api.ExecTarget{}, errors.New("the input is not a terminal: use -i without -t to send it to the command")
	}
	req := api.ExecRequest{Cmd: c.Cmd, Container: c.Container, Machine: c.Machine,
		ExecOptions: api.ExecOptions{User: c.User, WorkDir: c.Workdir, Env: c.Env, TTY: c.TTY, Stdin: c.Interactive}}
	sizeFd := -1
	if c.TTY {
		for _, fd := range []int{out, in} {
			if term.IsTerminal(fd) {
				sizeFd = fd
				break
			}
		}
		if cols, rows, ok := termSize(sizeFd); ok {
			req.Cols, req.Rows = cols, rows
		}
	}
	client, err := g.client()
	if err != nil {
		return 0, api.ExecTarget{}, err
	}
	defer client.Close()
	startCtx, cancel := context.WithTimeout(context.Background(), execStartTimeout)
	s, target, err := client.ExecAttach(startCtx, c.Service, req)
	cancel() // the stream, once open, is the caller's: this ends nothing
	if err != nil {
		return 0, target, err
	}
	defer s.Close()

	if c.TTY && c.Interactive {
		old, err := term.MakeRaw(in)
		if err != nil {
			return 0, target, fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		restore := func() { term.Restore(in, old) }
		defer restore()
		// Raw mode turns Ctrl-C into a byte for the command; a signal
		// from elsewhere still ends uncloud, with the terminal restored.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
		defer signal.Stop(sigs)
		go func() {
			sig := <-sigs
			restore()
			os.Exit(128 + int(sig.(syscall.Signal)))
		}()
	}
	if sizeFd >= 0 {
		stop := followSize(sizeFd, s)
		defer stop()
	}
	if c.Interactive {
		go sendInput(os.Stdin, s)
	}
	err = s.Output(func(stream int, p []byte) error {
		w := os.Stdout
		if stream == 2 {
			w = os.Stderr
		}
		_, err := w.Write(p)
		return err
	})
	if err != nil {
		return 0, target, err
	}
	code, err := s.Wait(context.Background())
	return code, target, err
}

// termSize is a terminal's size, if fd is one.
func termSize(fd int) (cols, rows uint16, ok bool) {
	if fd < 0 {
		return 0, 0, false
	}
	w, h, err := term.GetSize(fd)
	if err != nil || w <= 0 || h <= 0 {
		return 0, 0, false
	}
	return uint16(min(w, 0xffff)), uint16(min(h, 0xffff)), true
}

// followSize sends the terminal's size to the command on every SIGWINCH.
func followSize(fd int, s api.ExecSession) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-winch:
				if cols, rows, ok := termSize(fd); ok {
					s.Resize(context.Background(), cols, rows)
				}
			}
		}
	}()
	return func() { signal.Stop(winch); close(done) }
}

// sendInput copies r to the command, then says end of file.
func sendInput(r io.Reader, s api.ExecSession) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if s.Input(buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			s.CloseInput()
			return
		}
	}
}
