package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Contexts: named lists of machines of one network that the CLI talks to,
// kept in the user's config directory. The user's own targets come first,
// in their order; the ones the CLI learned from the network follow.

// maxContextsFile bounds the read of contexts.json (a few hundred bytes
// per context).
const maxContextsFile = 1 << 20

// contextFile is contexts.json.
type contextFile struct {
	Current  string         `json:"current,omitempty"`
	Contexts []contextEntry `json:"contexts"`
}

// contextEntry is one context.
type contextEntry struct {
	Name string `json:"name"`
	// Targets are the user's, tried first in this order; never changed
	// by the CLI.
	Targets []string `json:"targets"`
	// NetworkID is the network of the first agent that answered; a
	// machine of another network is passed over.
	NetworkID string `json:"network_id,omitempty"`
	// Learned are the other machines of the network the CLI found,
	// tried after Targets; replaced at each refresh.
	Learned   []learnedTarget `json:"learned,omitempty"`
	LearnedAt time.Time       `json:"learned_at,omitzero"`
}

// learnedTarget is a machine found in the network and the target that
// should reach it.
type learnedTarget struct {
	Machine string `json:"machine"`
	Target  string `json:"target"`
}

func (f *contextFile) find(name string) *contextEntry {
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			return &f.Contexts[i]
		}
	}
	return nil
}

// contextStore is contexts.json in dir.
type contextStore struct{ dir string }

// userContextStore is the store in the user's config directory
// ($XDG_CONFIG_HOME/uncloud, else ~/.config/uncloud).
func userContextStore() (contextStore, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return contextStore{}, fmt.Errorf("contexts: find the user's config directory: %w", err)
	}
	return contextStore{dir: filepath.Join(dir, "uncloud")}, nil
}

func (s contextStore) path() string { return filepath.Join(s.dir, "contexts.json") }

// load reads the file; a missing file is no contexts.
func (s contextStore) load() (contextFile, error) {
	var f contextFile
	fh, err := os.Open(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("contexts file %s: %w", s.path(), err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxContextsFile+1))
	if err != nil {
		return f, fmt.Errorf("contexts file %s: %w", s.path(), err)
	}
	if len(b) > maxContextsFile {
		return f, fmt.Errorf("contexts file %s: larger than %d bytes; fix or remove it", s.path(), maxContextsFile)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("contexts file %s is not valid (fix or remove it): %w", s.path(), err)
	}
	for _, c := range f.Contexts {
		if err := checkContext(c.Name, c.Targets); err != nil {
			return f, fmt.Errorf("contexts file %s (fix or remove it): %w", s.path(), err)
		}
	}
	return f, nil
}

// save replaces the file crash-safely: a temp file in the same directory,
// written, synced and renamed over the old one, then the directory synced,
// so a crash leaves the old file or the new one, never a torn one. Mode
// 0600 in a 0700 directory: targets name the user's machines and accounts.
func (s contextStore) save(f contextFile) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("contexts: create %s: %w", s.dir, err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("contexts: %s: %w", s.dir, err)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("contexts: encode: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".contexts-*.json") // created 0600
	if err != nil {
		return fmt.Errorf("contexts: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("contexts: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("contexts: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("contexts: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fmt.Errorf("contexts: replace %s: %w", s.path(), err)
	}
	ok = true
	if d, err := os.Open(s.dir); err == nil {
		d.Sync() // the rename itself; best effort where dirs cannot sync
		d.Close()
	}
	return nil
}

// update loads, applies change, and saves when change returns nil, under
// an exclusive lock on the directory's lock file, so a command's learning
// and a concurrent 'context add' cannot undo one another.
func (s contextStore) update(change func(*contextFile) error) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("contexts: create %s: %w", s.dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, ".contexts.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("contexts: lock: %w", err)
	}
	defer lock.Close() // releases the lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("contexts: lock %s: %w", lock.Name(), err)
	}
	f, err := s.load()
	if err != nil {
		return err
	}
	if err := change(&f); err != nil {
		return err
	}
	return s.save(f)
}

var contextNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkContext says what is wrong with a context's name or targets.
func checkContext(name string, targets []string) error {
	if !contextNameRE.MatchString(name) {
		return fmt.Errorf("context name %q: want letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)", name)
	}
	if len(targets) == 0 {
		return fmt.Errorf("context %s: no machines", name)
	}
	for _, t := range targets {
		if err := checkTarget(t); err != nil {
			return fmt.Errorf("context %s: %w", name, err)
		}
	}
	return nil
}

// checkTarget accepts what --connect accepts, except a password in the
// URL: the file would then hold a secret.
func checkTarget(t string) error {
	if strings.HasPrefix(t, "/") {
		return nil
	}
	u, err := url.Parse(t)
	if err != nil {
		return fmt.Errorf("target %q: %w", t, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return fmt.Errorf("target %q: no socket path", t)
		}
	case "ssh":
		if u.Hostname() == "" {
			return fmt.Errorf("target %q: no host", t)
		}
		if _, has := u.User.Password(); has {
			return fmt.Errorf("target %q: a password in the URL is not kept; use an SSH key or ssh-agent", redactURL(u))
		}
	default:
		return fmt.Errorf("target %q: want ssh://user@host[:port][/socket], unix:///path or /path", t)
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	return c.String()
}

// tries is the order in which the context's targets are tried: the user's,
// then the learned ones not already among them.
func (c contextEntry) tries() []contextTry {
	var out []contextTry
	for _, t := range c.Targets {
		out = append(out, contextTry{Target: t})
	}
	for _, l := range c.Learned {
		if !slices.Contains(c.Targets, l.Target) {
			out = append(out, contextTry{Target: l.Target, Machine: l.Machine, Learned: true})
		}
	}
	return out
}

// contextTry is one target to try, named for the user's messages.
type contextTry struct {
	Target, Machine string
	Learned         bool
}

func (t contextTry) String() string {
	if t.Machine != "" {
		return t.Machine + " (" + t.Target + ")"
	}
	return t.Target
}
