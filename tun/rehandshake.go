package tun

import (
	"fmt"
	"strings"
	"time"
)

// Rehandshake makes a peer that never completed a handshake initiate one
// now, towards endpoint (an ip:port or a relay endpoint string), and
// reports whether it did. A peer with a session is left alone.
//
// WireGuard sends at most one handshake initiation per peer every
// REKEY_TIMEOUT (5 s), counting attempts that went nowhere. A machine's
// first initiation to a new peer often does: the peer has not learnt the
// machine's key yet (its record is still on the way) and drops it, or no
// endpoint that works is known yet. The next try would come 5 s later,
// which was the 5 s of every join after the first. Removing and adding
// the peer again in one configuration transaction gives it fresh
// handshake state, and the keepalive it is added with starts an
// initiation at once. Nothing is lost: without a session there is no
// traffic to lose.
func (d *Device) Rehandshake(key Key, endpoint string) (bool, error) {
	if _, err := d.bind.ParseEndpoint(endpoint); err != nil {
		return false, fmt.Errorf("rehandshake %s: %w", key, err)
	}
	status, err := d.Peers()
	if err != nil {
		return false, fmt.Errorf("rehandshake %s: %w", key, err)
	}
	for _, st := range status {
		if st.PublicKey == key && !st.LastHandshake.IsZero() {
			return false, nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[key]
	if !ok {
		return false, fmt.Errorf("rehandshake %s: no such peer", key)
	}
	keepalive := p.PersistentKeepalive
	if keepalive <= 0 {
		keepalive = DefaultKeepalive // what makes the re-added peer initiate
	}
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nremove=true\n", key.hexString())
	fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\n", key.hexString(), endpoint)
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(keepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, prefix := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", prefix.Masked())
	}
	if err := d.ipcSet(b.String()); err != nil {
		return false, fmt.Errorf("rehandshake %s via %s: %w", key, endpoint, err)
	}
	return true, nil
}
