package api

import "net/url"

// The local API's paths (the unix socket the CLI talks to). They are the
// wire format: an older CLI talks to a newer agent through them, so a
// path, once shipped, does not change.
const (
	PathStatus     = "/v1/status"
	PathState      = "/v1/state"     // GET ?prefix=
	PathStateRaw   = "/v1/state/raw" // PUT SignedRecord (adversarial tests only)
	PathStateGet   = "/v1/state/get" // GET ?key=
	PathMachines   = "/v1/machines"  // GET; /{name}: PATCH, DELETE
	PathTokens     = "/v1/tokens"    // GET, POST; /{id}: DELETE
	PathMesh       = "/v1/mesh"
	PathIngress    = "/v1/ingress"
	PathDNS        = "/v1/dns"
	PathDNSQuery   = "/v1/dns/query"  // GET ?name=&type=
	PathHostNet    = "/v1/hostnet"    // GET, PATCH HostNetUpdate: exposed ports and proxies
	PathServices   = "/v1/services"   // GET, POST (?stream=1); /{name}[/scale|stop|start|exec|logs|history|rollback]
	PathContainers = "/v1/containers" // GET
	PathLogs       = "/v1/logs"       // GET ?service=…&follow=&since=&until=&tail=, answers NDJSON
	PathDeploy     = "/v1/deploy"     // POST, answers NDJSON
	PathImagePush  = "/v1/images/push"
)

// The machine API's paths (mesh address, mutual TLS). Machines of two
// versions meet during an upgrade, so these do not change either. The
// CRDT block exchange keeps its own path in crdt (crdt.BlocksPath): it is
// that package's protocol, served on the same listener.
const (
	MachinePathReserve           = "/v1/subnets/reserve"        // POST ReserveRequest
	MachinePathSelf              = "/v1/self"                   // POST MachineUpdate: the callee changes its own record
	MachinePathKeyring           = "/v1/gossip/keyring"         // GET, POST GossipKeyring
	MachinePathRuntimeReady      = "/v1/runtime/ready"          // GET: Docker answers here
	MachinePathRuntimeContainers = "/v1/runtime/containers"     // POST spec; /{id}: GET, DELETE; /{id}/{action}: POST; /{id}/logs: GET
	MachinePathRuntimeImage      = "/v1/runtime/image"          // GET ?ref=: the image's ID
	MachinePathRuntimeImages     = "/v1/runtime/images"         // POST a docker save tarball
	MachinePathImageResolve      = "/v1/runtime/images/resolve" // POST ImageResolveRequest
	MachinePathImagePull         = "/v1/runtime/images/pull"    // POST ImagePullRequest; answers NDJSON ImageProgress
)

// JoinPath is the one call a joining machine makes, over its temporary
// WireGuard peer to the join port (plain HTTP: it has no identity the
// network knows yet).
const JoinPath = "/v1/join"

// under is base/escaped(name)[/rest...]: one path segment per name, so a
// name with a slash cannot reach another route.
func under(base, name string, rest ...string) string {
	p := base + "/" + url.PathEscape(name)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}
