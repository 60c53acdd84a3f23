// Package hostnet owns what a machine's host programs get of the mesh
// and give to it: the host ports exposed to the mesh (forwarded by the
// netstack), the SOCKS5 and HTTP proxies into the mesh, and the file in
// the data dir that keeps these settings across restarts (hostnet.json).
// The settings belong to the machine: init, join, agent and install write
// them, `uncloud expose` and `uncloud proxy` change them at runtime
// through the agent (Manager).
package hostnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

// FileName is the settings file in the data dir.
const FileName = "hostnet.json"

// fileVersion is bumped when the meaning of a field changes.
const fileVersion = 1

// MaxExposed bounds the exposed ports of one machine (the file, the API,
// the gossip metadata that shows them to other machines).
const MaxExposed = 64

// maxFileBytes bounds what Load reads: the largest valid file is a few KiB.
const maxFileBytes = 64 << 10

// Settings are a machine's host networking settings.
type Settings struct {
	// Expose lists the host ports forwarded from the mesh (netstack mode),
	// sorted by port, then protocol.
	Expose []tun.ExposedPort
	// SOCKS5 and HTTPProxy are the listen addresses (IP:port) of the
	// proxies into the mesh; empty is off.
	SOCKS5    string
	HTTPProxy string
	// Userspace keeps the mesh in the agent's netstack even where a
	// kernel TUN would work: the machine was joined (or started) so.
	Userspace bool
}

// file is Settings as stored.
type file struct {
	Version   int      `json:"version"`
	Expose    []string `json:"expose,omitempty"`
	SOCKS5    string   `json:"socks5,omitempty"`
	HTTPProxy string   `json:"http_proxy,omitempty"`
	Userspace bool     `json:"userspace,omitempty"`
}

// Change is what a command asks to change. Nil proxy addresses leave them
// as they are; a pointer to "" turns one off.
type Change struct {
	AddExpose    []tun.ExposedPort
	RemoveExpose []tun.ExposedPort
	SOCKS5       *string
	HTTPProxy    *string
	// Userspace, when set, keeps (or forgets) netstack mode: join
	// --userspace, agent --userspace or --kernel.
	Userspace *bool
}

// Empty says whether the change changes nothing.
func (c Change) Empty() bool {
	return len(c.AddExpose) == 0 && len(c.RemoveExpose) == 0 && c.SOCKS5 == nil && c.HTTPProxy == nil && c.Userspace == nil
}

// Load reads the settings in dataDir; a missing file is no settings.
func Load(dataDir string) (Settings, error) {
	path := filepath.Join(dataDir, FileName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var raw file
	dec := json.NewDecoder(&limitedReader{f: f, left: maxFileBytes})
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Settings{}, fmt.Errorf("parse %s: %w", path, err)
	}
	if raw.Version != fileVersion {
		return Settings{}, fmt.Errorf("%s: version %d, this uncloud understands %d", path, raw.Version, fileVersion)
	}
	s := Settings{Userspace: raw.Userspace}
	for _, e := range raw.Expose {
		p, err := tun.ParseExposedPort(e)
		if err != nil {
			return Settings{}, fmt.Errorf("%s: %w", path, err)
		}
		s.Expose = append(s.Expose, p)
	}
	for _, l := range []struct {
		name string
		in   string
		out  *string
	}{{"socks5", raw.SOCKS5, &s.SOCKS5}, {"http_proxy", raw.HTTPProxy, &s.HTTPProxy}} {
		if l.in == "" {
			continue
		}
		if *l.out, err = ParseListen(l.in); err != nil {
			return Settings{}, fmt.Errorf("%s: %s: %w", path, l.name, err)
		}
	}
	s.Expose = normalize(s.Expose)
	if err := s.validate(nil); err != nil {
		return Settings{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// limitedReader fails (rather than truncating, as io.LimitReader would)
// past its limit, so an oversized file is an error, not a parse error.
type limitedReader struct {
	f    *os.File
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("file is larger than %d bytes", maxFileBytes)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

// Save writes the settings atomically (temp file, fsync, rename, fsync of
// the directory): a crash leaves the old file or the new one.
func (s Settings) Save(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	raw := file{Version: fileVersion, SOCKS5: s.SOCKS5, HTTPProxy: s.HTTPProxy, Userspace: s.Userspace}
	for _, p := range s.Expose {
		raw.Expose = append(raw.Expose, p.String())
	}
	b, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dataDir, FileName), append(b, '\n'), 0o600)
}

// Apply returns the settings with c applied. Adding a port already
// exposed changes nothing; removing one that is not is an error (a typo
// should not pass for success). reserved are the ports the agent's own
// services hold inside the netstack, which an exposed port would never
// reach.
func (s Settings) Apply(c Change, reserved []tun.ExposedPort) (Settings, error) {
	out := Settings{Expose: slices.Clone(s.Expose), SOCKS5: s.SOCKS5, HTTPProxy: s.HTTPProxy, Userspace: s.Userspace}
	if c.Userspace != nil {
		out.Userspace = *c.Userspace
	}
	for _, p := range c.RemoveExpose {
		p = canonical(p)
		i := slices.Index(out.Expose, p)
		if i < 0 {
			return s, fmt.Errorf("%w: %v is not exposed (exposed: %s)", api.ErrNotFound, p, FormatPorts(s.Expose))
		}
		out.Expose = slices.Delete(out.Expose, i, i+1)
	}
	out.Expose = normalize(append(out.Expose, c.AddExpose...))
	if c.SOCKS5 != nil {
		out.SOCKS5 = *c.SOCKS5
	}
	if c.HTTPProxy != nil {
		out.HTTPProxy = *c.HTTPProxy
	}
	if err := out.validate(reserved); err != nil {
		return s, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return out, nil
}

func (s Settings) validate(reserved []tun.ExposedPort) error {
	if len(s.Expose) > MaxExposed {
		return fmt.Errorf("%d exposed ports, at most %d", len(s.Expose), MaxExposed)
	}
	for _, p := range s.Expose {
		if p.Port == 0 || (p.Proto != "tcp" && p.Proto != "udp") {
			return fmt.Errorf("exposed port %v is not PORT/tcp or PORT/udp", p)
		}
		if slices.Contains(reserved, p) {
			return fmt.Errorf("port %v is the agent's own inside the netstack (its mesh DNS, gossip, join or machine API), so it cannot be exposed", p)
		}
	}
	if s.SOCKS5 != "" && s.SOCKS5 == s.HTTPProxy {
		return fmt.Errorf("the SOCKS5 and HTTP proxies cannot both listen on %s", s.SOCKS5)
	}
	return nil
}

// canonical spells a port's protocol ("" is tcp).
func canonical(p tun.ExposedPort) tun.ExposedPort {
	if p.Proto == "" {
		p.Proto = "tcp"
	}
	return p
}

// normalize sorts ports (by port, then protocol) and drops duplicates.
func normalize(ports []tun.ExposedPort) []tun.ExposedPort {
	if len(ports) == 0 {
		return nil
	}
	out := make([]tun.ExposedPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, canonical(p))
	}
	slices.SortFunc(out, func(a, b tun.ExposedPort) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return slices.Compact(out)
}

// FormatPorts is "22/tcp, 53/udp", or "none".
func FormatPorts(ports []tun.ExposedPort) string {
	if len(ports) == 0 {
		return "none"
	}
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// ParseListen reads a proxy's listen address: PORT or :PORT is loopback
// (127.0.0.1:PORT), which is the default because anyone who can connect
// to a proxy reaches the mesh as this machine; IP:PORT listens there, as
// the user asked (0.0.0.0:PORT for every interface). localhost means
// 127.0.0.1; other host names are refused, since what they resolve to
// can change.
func ParseListen(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty listen address")
	}
	host, portText := "", s
	if strings.Contains(s, ":") {
		var err error
		if host, portText, err = net.SplitHostPort(s); err != nil {
			return "", fmt.Errorf("listen address %q: want PORT, :PORT or IP:PORT", s)
		}
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if host == "" && !strings.Contains(s, ":") && err != nil && strings.ContainsAny(s, ".abcdefABCDEF") {
		return "", fmt.Errorf("listen address %q: want PORT, :PORT or IP:PORT", s)
	}
	if err != nil || port == 0 {
		return "", fmt.Errorf("listen address %q: port %q is not 1..65535", s, portText)
	}
	addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if host != "" && host != "localhost" {
		if addr, err = netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("listen address %q: %q is not an IP address (PORT alone listens on 127.0.0.1)", s, host)
		}
		addr = addr.Unmap()
		if addr.Zone() != "" {
			return "", fmt.Errorf("listen address %q: zones are not supported", s)
		}
	}
	return netip.AddrPortFrom(addr, uint16(port)).String(), nil
}

// ParseListenFlag reads a --socks5 or --http-proxy value: nil when not
// given, "" for off (or none), else the address ParseListen makes of it.
func ParseListenFlag(flag, s string) (*string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return nil, nil
	case "off", "none":
		off := ""
		return &off, nil
	}
	addr, err := ParseListen(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return &addr, nil
}

// IsLoopback says whether a listen address is on loopback only.
func IsLoopback(listen string) bool {
	ap, err := netip.ParseAddrPort(listen)
	return err == nil && ap.Addr().IsLoopback()
}

// Update applies c to the settings in dataDir and saves them, for the
// commands that start an agent (init, join, install): the agent reads
// them at its start.
func Update(dataDir string, c Change, reserved []tun.ExposedPort) (Settings, error) {
	s, err := Load(dataDir)
	if err != nil {
		return Settings{}, err
	}
	if c.Empty() {
		return s, nil
	}
	if s, err = s.Apply(c, reserved); err != nil {
		return Settings{}, err
	}
	return s, s.Save(dataDir)
}
