package tun

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SetPeer adds a peer or updates it in place. Other peers are not touched:
// their sessions, endpoints and counters carry on. A zero Endpoint keeps
// whatever endpoint the peer has (configured or learnt by roaming).
//
// Allowed IPs must not overlap another peer's, nor contain this machine's
// address: wireguard-go would silently move the prefix from one peer to
// the other, and traffic for one machine would go to another.
func (d *Device) SetPeer(p Peer) error {
	if err := d.checkPeer(p); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkOverlap(p); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", p.PublicKey.hexString())
	if p.Endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, prefix := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", prefix.Masked())
	}
	if err := d.ipcSet(b.String()); err != nil {
		return fmt.Errorf("set peer %s: %w", p.PublicKey, err)
	}
	d.peers[p.PublicKey] = p
	return nil
}

// RemovePeer removes a peer; its traffic stops at once. Removing an
// unknown peer is not an error, so removal can be retried.
func (d *Device) RemovePeer(key Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ipcSet(fmt.Sprintf("public_key=%s\nremove=true\n", key.hexString())); err != nil {
		return fmt.Errorf("remove peer %s: %w", key, err)
	}
	delete(d.peers, key)
	return nil
}

// SyncPeers makes the peer set equal to want: it removes peers not in want
// and sets the others, touching a peer only when its configuration changed.
// All changes are validated before any is applied.
func (d *Device) SyncPeers(want []Peer) error {
	wanted := make(map[Key]Peer, len(want))
	for _, p := range want {
		if err := d.checkPeer(p); err != nil {
			return err
		}
		if _, dup := wanted[p.PublicKey]; dup {
			return fmt.Errorf("peer %s is listed twice", p.PublicKey)
		}
		wanted[p.PublicKey] = p
	}
	if err := checkSetOverlap(want); err != nil {
		return err
	}
	d.mu.Lock()
	var remove []Key
	for k := range d.peers {
		if _, ok := wanted[k]; !ok {
			remove = append(remove, k)
		}
	}
	var set []Peer
	for _, p := range want {
		if cur, ok := d.peers[p.PublicKey]; !ok || !samePeer(cur, p) {
			set = append(set, p)
		}
	}
	d.mu.Unlock()
	// Removals first, so a prefix moving from a removed peer to a new one
	// is free by the time the new peer claims it.
	for _, k := range remove {
		if err := d.RemovePeer(k); err != nil {
			return err
		}
	}
	for _, p := range set {
		if err := d.SetPeer(p); err != nil {
			return err
		}
	}
	return nil
}

func (d *Device) checkPeer(p Peer) error {
	if p.PublicKey.IsZero() {
		return fmt.Errorf("peer has no public key")
	}
	if p.PublicKey == d.PublicKey() {
		return fmt.Errorf("peer %s is this machine's own key", p.PublicKey)
	}
	for _, prefix := range p.AllowedIPs {
		if !prefix.IsValid() {
			return fmt.Errorf("peer %s: invalid allowed IP %v", p.PublicKey, prefix)
		}
		if prefix.Contains(d.cfg.Address) {
			return fmt.Errorf("peer %s: allowed IP %v contains this machine's address %v", p.PublicKey, prefix, d.cfg.Address)
		}
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second {
		return fmt.Errorf("peer %s: keepalive %v out of range", p.PublicKey, p.PersistentKeepalive)
	}
	return nil
}

// checkOverlap runs under d.mu.
func (d *Device) checkOverlap(p Peer) error {
	for k, other := range d.peers {
		if k == p.PublicKey {
			continue
		}
		if a, b, ok := overlapping(p.AllowedIPs, other.AllowedIPs); ok {
			return fmt.Errorf("peer %s: allowed IP %v overlaps %v of peer %s", p.PublicKey, a, b, k)
		}
	}
	return nil
}

func checkSetOverlap(peers []Peer) error {
	for i := range peers {
		for j := i + 1; j < len(peers); j++ {
			if a, b, ok := overlapping(peers[i].AllowedIPs, peers[j].AllowedIPs); ok {
				return fmt.Errorf("peer %s: allowed IP %v overlaps %v of peer %s", peers[i].PublicKey, a, b, peers[j].PublicKey)
			}
		}
	}
	return nil
}

func overlapping(as, bs []netip.Prefix) (netip.Prefix, netip.Prefix, bool) {
	for _, a := range as {
		for _, b := range bs {
			if a.Overlaps(b) {
				return a, b, true
			}
		}
	}
	return netip.Prefix{}, netip.Prefix{}, false
}

func samePeer(a, b Peer) bool {
	if a.PublicKey != b.PublicKey || a.Endpoint != b.Endpoint ||
		a.PersistentKeepalive != b.PersistentKeepalive || len(a.AllowedIPs) != len(b.AllowedIPs) {
		return false
	}
	for i := range a.AllowedIPs {
		if a.AllowedIPs[i].Masked() != b.AllowedIPs[i].Masked() {
			return false
		}
	}
	return true
}

// Peers reads every peer's state from wireguard-go: the endpoint in use
// (which roaming may have changed from the configured one), the latest
// handshake and the byte counters. Sorted by public key.
func (d *Device) Peers() ([]PeerStatus, error) {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	peers, err := d.readPeersLocked()
	return slices.Clone(peers), err
}

// RecentPeers is Peers for pollers: an answer at most maxAge old is
// shared. The NAT layer and the resolver's reachability view each poll
// once a second; one IpcGet serves both. Any change made through this
// Device drops the shared answer. The answer is shared, not copied (two
// copies a second were a tenth of an idle agent's allocations): callers
// must not modify it.
func (d *Device) RecentPeers(maxAge time.Duration) ([]PeerStatus, error) {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	if d.status != nil && time.Since(d.statusAt) < maxAge {
		return d.status, nil
	}
	return d.readPeersLocked()
}

// readPeersLocked reads wireguard-go's state into a new slice, which it
// also keeps as the shared answer.
func (d *Device) readPeersLocked() ([]PeerStatus, error) {
	// One buffer for every reading (a fresh one grew to the dump's size
	// each time); the dump itself is one string, which parsing slices.
	d.dump.Reset()
	if err := d.wg.IpcGetOperation(&d.dump); err != nil {
		return nil, fmt.Errorf("read wireguard state: %w", err)
	}
	peers, err := parsePeerDump(d.dump.String())
	if err != nil {
		return nil, err
	}
	slices.SortFunc(peers, func(a, b PeerStatus) int { return bytes.Compare(a.PublicKey[:], b.PublicKey[:]) })
	d.status, d.statusAt = peers, time.Now()
	return peers, nil
}

// ipcSet configures wireguard-go and drops the shared RecentPeers answer.
func (d *Device) ipcSet(config string) error {
	d.statusMu.Lock()
	d.status = nil
	d.statusMu.Unlock()
	return d.wg.IpcSet(config)
}

// parsePeerDump reads the UAPI "get" format. The dump starts with this
// device's private key; it is skipped, never stored.
//
// It runs every second (the NAT layer's and the reachability view's
// shared reading), so it allocates only the result: lines and values are
// substrings of dump, keys decode in place, and the peers' allowed IPs
// share one backing array. A line scanner allocated a string per line,
// ten per peer.
func parsePeerDump(dump string) ([]PeerStatus, error) {
	var (
		peers   = make([]PeerStatus, 0, strings.Count(dump, "public_key="))
		ips     = make([]netip.Prefix, 0, strings.Count(dump, "allowed_ip="))
		cur     *PeerStatus
		ipsFrom int // where cur's allowed IPs start in ips
		hsSec   int64
		hsNsec  int64
		flush   = func() {
			if cur == nil {
				return
			}
			if hsSec != 0 || hsNsec != 0 {
				cur.LastHandshake = time.Unix(hsSec, hsNsec)
			}
			if len(ips) > ipsFrom {
				cur.AllowedIPs = ips[ipsFrom:len(ips):len(ips)] // an append by a caller copies
			}
			hsSec, hsNsec, ipsFrom = 0, 0, len(ips)
		}
	)
	for rest := dump; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if key == "public_key" {
			flush()
			k, ok := hexKey(value)
			if !ok {
				return nil, fmt.Errorf("wireguard state: bad public key %q", value)
			}
			peers = append(peers, PeerStatus{})
			cur = &peers[len(peers)-1]
			cur.PublicKey = k
			continue
		}
		if cur == nil {
			continue // device-level lines, including the private key
		}
		var err error
		switch key {
		case "endpoint":
			if IsRelayEndpoint(value) {
				cur.Relay, err = ParseRelayEndpoint(value)
			} else {
				cur.Endpoint, err = netip.ParseAddrPort(value)
			}
		case "last_handshake_time_sec":
			hsSec, err = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, err = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseUint(value, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseUint(value, 10, 64)
		case "persistent_keepalive_interval":
			var s int64
			s, err = strconv.ParseInt(value, 10, 64)
			cur.PersistentKeepalive = time.Duration(s) * time.Second
		case "allowed_ip":
			var p netip.Prefix
			p, err = netip.ParsePrefix(value)
			ips = append(ips, p)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard state: bad %s %q: %w", key, value, err)
		}
	}
	flush()
	return peers, nil
}

// hexKey decodes a key in lowercase or uppercase hex without a copy of s.
func hexKey(s string) (k Key, ok bool) {
	if len(s) != 2*KeyLen {
		return k, false
	}
	for i := range k {
		hi, ok1 := fromHex(s[2*i])
		lo, ok2 := fromHex(s[2*i+1])
		if !ok1 || !ok2 {
			return Key{}, false
		}
		k[i] = hi<<4 | lo
	}
	return k, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
