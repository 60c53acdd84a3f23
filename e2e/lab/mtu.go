package lab

import (
	"context"
	"fmt"
)

// SetMTU sets the MTU of the host's uplink, both ends of it (eth0 and its
// far end on the internet bridge or the NAT router's LAN), so the underlay
// really carries frames of that size and no larger. Call it before the
// agent starts: the agent reads the underlay MTU once, at start. The
// internet bridge follows its ports (the smallest port MTU wins), so a
// jumbo-frame lab needs every host on it set.
func (h *Host) SetMTU(ctx context.Context, mtu int) error {
	for _, end := range []struct{ ns, dev string }{{h.NS, "eth0"}, {h.farNS, h.farIf}} {
		if err := ipBatch(ctx, end.ns, fmt.Sprintf("link set %s mtu %d", end.dev, mtu)); err != nil {
			return fmt.Errorf("host %s: set MTU %d on %s: %w", h.Name, mtu, end.dev, err)
		}
	}
	return nil
}
