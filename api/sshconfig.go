package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/kevinburke/ssh_config"
)

// maxSSHConfig bounds the ~/.ssh/config read (it is the user's file, but
// a wrong path could name something huge).
const maxSSHConfig = 1 << 20

// SSHTarget is an ssh:// target as ssh(1) would reach it: the URL's
// host may be a Host alias of ~/.ssh/config, whose HostName, User, Port
// and IdentityFile apply unless the URL says otherwise (as ssh(1)'s
// command line wins over its config).
type SSHTarget struct {
	HostName, User, Port string
	IdentityFiles        []string // nil: the config names none
}

// ResolveSSH reads target ("ssh://user@host[:port][/socket]") against the
// user's ~/.ssh/config (configFile "" for that, "none" for no config).
func ResolveSSH(target, configFile string) (SSHTarget, error) {
	u, err := url.Parse(target)
	if err != nil {
		return SSHTarget{}, fmt.Errorf("connect target %q: %w", target, err)
	}
	if u.Scheme != "ssh" {
		return SSHTarget{}, fmt.Errorf("connect target %q: not ssh://", target)
	}
	home, _ := os.UserHomeDir()
	return resolveSSH(u, configFile, home)
}

func resolveSSH(u *url.URL, configFile, home string) (SSHTarget, error) {
	alias := u.Hostname()
	if alias == "" {
		return SSHTarget{}, fmt.Errorf("connect target %q: no host", u.String())
	}
	cfg, err := readSSHConfig(configFile, home)
	if err != nil {
		return SSHTarget{}, err
	}
	get := func(key string) string {
		if cfg == nil {
			return ""
		}
		v, _ := cfg.Get(alias, key) // an error is a bad pattern: as ssh(1), no match
		return v
	}
	r := SSHTarget{HostName: alias, User: u.User.Username(), Port: u.Port()}
	if h := get("HostName"); h != "" {
		// %h is the alias itself, the one token worth supporting here.
		r.HostName = strings.ReplaceAll(h, "%h", alias)
	}
	if r.User == "" {
		r.User = get("User")
	}
	if r.User == "" {
		r.User = os.Getenv("USER")
	}
	if r.User == "" {
		r.User = "root"
	}
	if r.Port == "" {
		r.Port = get("Port")
	}
	if r.Port == "" {
		r.Port = "22"
	}
	if cfg != nil {
		files, _ := cfg.GetAll(alias, "IdentityFile")
		for _, f := range files {
			if f == "" {
				continue
			}
			if rest, ok := strings.CutPrefix(f, "~/"); ok {
				f = filepath.Join(home, rest)
			} else if !filepath.IsAbs(f) {
				f = filepath.Join(home, ".ssh", f) // ssh(1) reads relative names from ~/.ssh
			}
			r.IdentityFiles = append(r.IdentityFiles, f)
		}
	}
	return r, nil
}

// readSSHConfig is the user's ssh config, nil when there is none.
func readSSHConfig(path, home string) (*ssh_config.Config, error) {
	if path == "none" {
		return nil, nil
	}
	if path == "" {
		if home == "" {
			return nil, nil
		}
		path = filepath.Join(home, ".ssh", "config")
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSSHConfig+1))
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	if len(b) > maxSSHConfig {
		return nil, fmt.Errorf("ssh config %s: larger than %d bytes", path, maxSSHConfig)
	}
	cfg, err := ssh_config.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return cfg, nil
}
