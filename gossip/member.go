package gossip

import (
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberState is what this machine believes about a member.
type MemberState int

const (
	Alive MemberState = iota
	// Suspect is memberlist's "missed probes, not yet declared dead".
	// memberlist reports no event for it, so Members lists suspects as
	// Alive (as memberlist's own Members does); Node.Suspected tells what
	// this machine's own probes found.
	Suspect
	Dead
	Left
)

func (s MemberState) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "unknown"
}

// Member is one machine in the mesh as gossip sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	Meta  []byte
	State MemberState
}

// EventKind says what changed about a member.
type EventKind int

const (
	Join   EventKind = iota // a member became alive (new, or back from dead/left); also self at start
	Leave                   // a member was declared dead or left (Member.State says which)
	Update                  // a live member's metadata changed
)

func (k EventKind) String() string {
	switch k {
	case Join:
		return "join"
	case Leave:
		return "leave"
	case Update:
		return "update"
	}
	return "unknown"
}

// Event is a membership change.
type Event struct {
	Kind   EventKind
	Member Member
}

// memberEntry is the membership table's record of one member. It is filled
// from memberlist's event callbacks, which run under memberlist's node lock:
// copying there is the only race-free way to read a memberlist.Node, whose
// fields memberlist mutates under that lock.
type memberEntry struct {
	node  memberlist.Node // a private copy, for SendBestEffort/SendReliable
	state MemberState
	since time.Time
	// leaving: the member announced its Leave (leftTopic). memberlist's
	// leave callback does not say whether a member left or died, so the
	// announcement is what tells Left from Dead.
	leaving bool
}

func (e *memberEntry) member() Member {
	return Member{
		Name:  e.node.Name,
		Addr:  addrPort(e.node.Addr, e.node.Port),
		Meta:  clone(e.node.Meta),
		State: e.state,
	}
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// copyNode deep-copies what memberlist hands to a callback.
func copyNode(n *memberlist.Node) memberlist.Node {
	c := *n
	c.Addr = append(net.IP(nil), n.Addr...)
	c.Meta = clone(n.Meta)
	return c
}
