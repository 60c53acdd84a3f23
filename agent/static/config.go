package static

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Config is a parsed static configuration file.
type Config struct {
	Device tun.Config
	Peers  []tun.Peer
	// SOCKS5 is a loopback address on which a netstack agent lets host
	// processes dial into the mesh.
	SOCKS5 string
	// HTTPProxy is the same for the HTTP proxy (a command-line flag only).
	HTTPProxy string
}

// ConfigError names the place and the field that is wrong.
type ConfigError struct {
	File    string
	Line    int
	Section string
	Field   string
	Err     error
}

func (e *ConfigError) Error() string {
	where := e.File
	if e.Line > 0 {
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	field := e.Field
	if e.Section != "" {
		field = fmt.Sprintf("[%s] %s", e.Section, e.Field)
	}
	return fmt.Sprintf("%s: %s: %v", where, field, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads and parses a static configuration file. The file
// holds the machine's private key, so one that group or others may read
// or write is refused (as ssh refuses a loose private key), naming the fix.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Config{}, fmt.Errorf("stat config %s: %w", path, err)
	}
	cfg, err := ParseConfig(path, f)
	if err != nil {
		return Config{}, err
	}
	if err := checkSecretMode(path, st.Mode()); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// checkSecretMode refuses a file holding a private key that group or
// others may read or write.
func checkSecretMode(path string, mode os.FileMode) error {
	if mode.Perm()&0o066 != 0 {
		return fmt.Errorf("%s holds a private key but its mode is %04o, so other users can read or change it: run 'chmod 600 %s'", path, mode.Perm(), path)
	}
	return nil
}

// ParseConfig parses the wg-quick-like format:
//
//	[Interface]
//	PrivateKey = <base64>
//	Address = 10.210.1.1
//	ListenPort = 51820
//	# optional: Name, MTU, Userspace, Expose, SOCKS5
//
//	[Peer]
//	PublicKey = <base64>
//	Endpoint = 198.18.0.2:51820
//	AllowedIPs = 10.210.2.0/24
//	PersistentKeepalive = 25
//
// Field names are case-insensitive; '#' starts a comment. Every error names
// the file, the line and the field.
func ParseConfig(name string, r io.Reader) (Config, error) {
	p := staticParser{file: name}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.line++
		if err := p.parseLine(sc.Text()); err != nil {
			return Config{}, err
		}
	}
	if err := sc.Err(); err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", name, err)
	}
	return p.finish()
}

type staticParser struct {
	file    string
	line    int
	section string
	seen    map[string]bool // fields seen in the current section
	cfg     Config
	haveIf  bool
	peer    *tun.Peer
	peerAt  int
}

func (p *staticParser) fail(field string, err error) error {
	return &ConfigError{File: p.file, Line: p.line, Section: p.section, Field: field, Err: err}
}

func (p *staticParser) parseLine(raw string) error {
	line := raw
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	if strings.HasPrefix(line, "[") {
		return p.startSection(line)
	}
	key, value, ok := strings.Cut(line, "=")
	if !ok {
		return p.fail(line, fmt.Errorf("expected Field = value"))
	}
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if p.section == "" {
		return p.fail(key, fmt.Errorf("field outside of an [Interface] or [Peer] section"))
	}
	lower := strings.ToLower(key)
	// Lists may repeat, as in wg-quick; scalar fields may not.
	if p.seen[lower] && lower != "allowedips" && lower != "expose" {
		return p.fail(key, fmt.Errorf("given twice"))
	}
	p.seen[lower] = true
	if p.section == "Interface" {
		return p.interfaceField(key, lower, value)
	}
	return p.peerField(key, lower, value)
}

func (p *staticParser) startSection(line string) error {
	if err := p.closePeer(); err != nil {
		return err
	}
	switch strings.ToLower(line) {
	case "[interface]":
		if p.haveIf {
			p.section = "Interface"
			return p.fail("[Interface]", fmt.Errorf("section given twice"))
		}
		p.haveIf, p.section = true, "Interface"
	case "[peer]":
		p.section = "Peer"
		p.peer, p.peerAt = &tun.Peer{PersistentKeepalive: tun.DefaultKeepalive}, p.line
	default:
		return p.fail(line, fmt.Errorf("unknown section (want [Interface] or [Peer])"))
	}
	p.seen = make(map[string]bool)
	return nil
}

func (p *staticParser) interfaceField(key, lower, value string) error {
	d := &p.cfg.Device
	var err error
	switch lower {
	case "privatekey":
		d.PrivateKey, err = tun.ParseKey(value)
	case "address":
		d.Address, err = parseMeshAddress(value)
	case "listenport":
		var port uint64
		port, err = strconv.ParseUint(value, 10, 16)
		if err == nil && port == 0 {
			err = fmt.Errorf("port 0 is not allowed")
		}
		d.ListenPort = uint16(port)
	case "name":
		if value == "" || len(value) > 15 || strings.ContainsAny(value, "/ \t") {
			err = fmt.Errorf("%q is not an interface name (1..15 bytes, no '/' or spaces)", value)
		}
		d.InterfaceName = value
	case "mtu":
		d.MTU, err = strconv.Atoi(value)
		if err == nil && (d.MTU < 576 || d.MTU > 65535) {
			err = fmt.Errorf("%d is out of range 576..65535", d.MTU)
		}
	case "userspace":
		d.Userspace, err = strconv.ParseBool(value)
	case "expose":
		for _, item := range splitList(value) {
			e, perr := tun.ParseExposedPort(item)
			if perr != nil {
				return p.fail(key, perr)
			}
			d.Expose = append(d.Expose, e)
		}
	case "socks5":
		p.cfg.SOCKS5, err = parseLoopback(value)
	default:
		err = fmt.Errorf("unknown field")
	}
	if err != nil {
		return p.fail(key, err)
	}
	return nil
}

func (p *staticParser) peerField(key, lower, value string) error {
	var err error
	switch lower {
	case "publickey":
		p.peer.PublicKey, err = tun.ParseKey(value)
	case "endpoint":
		p.peer.Endpoint, err = netip.ParseAddrPort(value)
		if err != nil {
			err = fmt.Errorf("%q is not IP:port: %w", value, err)
		}
	case "allowedips":
		for _, item := range splitList(value) {
			prefix, perr := netip.ParsePrefix(item)
			if perr != nil {
				return p.fail(key, fmt.Errorf("%q is not a prefix like %v: %w", item, meshaddr.Subnet(2), perr))
			}
			p.peer.AllowedIPs = append(p.peer.AllowedIPs, prefix.Masked())
		}
	case "persistentkeepalive":
		if strings.EqualFold(value, "off") {
			p.peer.PersistentKeepalive = 0
			break
		}
		var secs uint64
		secs, err = strconv.ParseUint(value, 10, 16)
		p.peer.PersistentKeepalive = time.Duration(secs) * time.Second
	default:
		err = fmt.Errorf("unknown field")
	}
	if err != nil {
		return p.fail(key, err)
	}
	return nil
}

func (p *staticParser) closePeer() error {
	if p.peer == nil {
		return nil
	}
	peer := *p.peer
	p.peer = nil
	if peer.PublicKey.IsZero() {
		return &ConfigError{File: p.file, Line: p.peerAt, Section: "Peer", Field: "PublicKey", Err: fmt.Errorf("missing")}
	}
	for _, other := range p.cfg.Peers {
		if other.PublicKey == peer.PublicKey {
			return &ConfigError{File: p.file, Line: p.peerAt, Section: "Peer", Field: "PublicKey", Err: fmt.Errorf("peer %s is listed twice", peer.PublicKey)}
		}
	}
	p.cfg.Peers = append(p.cfg.Peers, peer)
	return nil
}

func (p *staticParser) finish() (Config, error) {
	if err := p.closePeer(); err != nil {
		return Config{}, err
	}
	missing := func(field string) error {
		return &ConfigError{File: p.file, Section: "Interface", Field: field, Err: fmt.Errorf("missing")}
	}
	if !p.haveIf {
		return Config{}, &ConfigError{File: p.file, Field: "[Interface]", Err: fmt.Errorf("section missing")}
	}
	if p.cfg.Device.PrivateKey.IsZero() {
		return Config{}, missing("PrivateKey")
	}
	if !p.cfg.Device.Address.IsValid() {
		return Config{}, missing("Address")
	}
	return p.cfg, nil
}

// parseMeshAddress takes 10.210.X.1, or wg-quick's 10.210.X.1/24 form; the
// interface holds only the /32 either way.
func parseMeshAddress(value string) (netip.Addr, error) {
	if prefix, err := netip.ParsePrefix(value); err == nil {
		value = prefix.Addr().String()
	}
	addr, err := netip.ParseAddr(value)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IPv4 address: %w", value, err)
	}
	if !meshaddr.Mesh().Contains(addr) {
		return netip.Addr{}, fmt.Errorf("%v is outside the mesh %v", addr, meshaddr.Mesh())
	}
	return addr, nil
}

// parseLoopback accepts only a loopback listen address: the SOCKS5 server
// has no authentication, so anything else would open the mesh to the LAN.
func parseLoopback(value string) (string, error) {
	ap, err := netip.ParseAddrPort(value)
	if err != nil {
		return "", fmt.Errorf("%q is not IP:port: %w", value, err)
	}
	if !ap.Addr().IsLoopback() {
		return "", fmt.Errorf("%v is not a loopback address; the SOCKS5 server has no authentication", ap.Addr())
	}
	return ap.String(), nil
}

func splitList(value string) []string {
	var out []string
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
