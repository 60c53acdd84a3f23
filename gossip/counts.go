package gossip

// MemberCounts counts the members this machine knows of, itself included,
// by state, for the agent's metrics. Unlike Members it tells suspects
// (members this machine's own probes found silent, see Suspected) from
// alive ones, and counts dead and left members still remembered.
func (n *Node) MemberCounts() map[MemberState]int {
	n.mu.Lock()
	states := make(map[string]MemberState, len(n.members))
	for name, e := range n.members {
		states[name] = e.state
	}
	n.mu.Unlock()
	out := map[MemberState]int{}
	for name, st := range states {
		if st == Alive && name != n.cfg.Name && n.Suspected(name) {
			st = Suspect
		}
		out[st]++
	}
	return out
}
