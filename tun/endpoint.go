package tun

import (
	"fmt"
	"net/netip"
)

// SetEndpoint points an existing peer at a new endpoint, "ip:port" or a
// relayed "relay:<key>@ip:port", touching nothing else of the peer. It is
// how the NAT layer applies the path it chose. The stored peer forgets its
// configured endpoint, so a later SyncPeers with a zero endpoint keeps the
// chosen one.
func (d *Device) SetEndpoint(key Key, endpoint string) error {
	if _, err := d.bind.ParseEndpoint(endpoint); err != nil {
		return fmt.Errorf("set endpoint of %s: %w", key, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[key]
	if !ok {
		return fmt.Errorf("set endpoint of %s: no such peer", key)
	}
	if err := d.ipcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\nendpoint=%s\n", key.hexString(), endpoint)); err != nil {
		return fmt.Errorf("set endpoint of %s to %s: %w", key, endpoint, err)
	}
	p.Endpoint = netip.AddrPort{}
	d.peers[key] = p
	return nil
}

// PrivateKey returns the device's private key, for the NAT layer's
// per-pair keys (X25519 with each peer). Never log it.
func (d *Device) PrivateKey() Key { return d.cfg.PrivateKey }
