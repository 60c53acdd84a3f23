package ingress

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/uncloud-mesh/uncloud/record"
)

// IngressRole is the machine role that runs the proxy.
const IngressRole = "ingress"

// issuerFor chooses the one ingress machine that orders certificates for
// name: the highest rendezvous score of name and machine ID over the live
// ingress machines. Every machine computes the same answer from the same
// view, and when a machine leaves only its names move. Views can differ
// for a moment (a partition, a record still replicating): then two
// machines may both order, which costs one duplicate order, never a
// wrong certificate.
func issuerFor(name string, ingressMachines []string) string {
	var best string
	var bestScore uint64
	for _, id := range ingressMachines {
		h := sha256.Sum256([]byte(name + "\x00" + id))
		s := binary.BigEndian.Uint64(h[:8])
		if best == "" || s > bestScore || s == bestScore && id < best {
			best, bestScore = id, s
		}
	}
	return best
}

// liveIngress lists the ingress machines this machine can reach, itself
// included (it runs the proxy, so it has the role), sorted.
func liveIngress(machines map[string]*record.Machine, self string, reach Reachability) []string {
	out := []string{self}
	for id, m := range machines {
		if id == self || !slices.Contains(m.Roles, IngressRole) {
			continue
		}
		if reach == nil || reach.Reachable(id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
