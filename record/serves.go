package record

// Serves reports whether the container should get traffic, as far as its
// own record tells: it is running and its health check, if it has one, has
// passed. The DNS answers for a service and the ingress routes both use
// this one rule, so a name never points where the proxy refuses to go.
//
//   - running, no health check (Health "" or Docker's "none"): serves; the
//     process is up and nothing more can be known about it;
//   - running, "healthy": serves;
//   - running, "starting": does not serve yet; the check has not passed,
//     and a container that takes a while to warm up would otherwise get
//     traffic it cannot answer (a rolling deploy keeps the old container
//     until the new one is healthy, so the service does not go dark);
//   - running, "unhealthy": does not serve;
//   - any health status this binary does not know: does not serve (it has
//     not proved that it serves);
//   - not running (created, restarting, paused, exited, dead): does not
//     serve;
//   - draining (a rollout removes it next): does not serve, so the routes
//     leave it before it stops.
//
// Whether the container's machine is reachable and whether it has a usable
// address are the caller's to check: they are not facts of the record.
func (c *Container) Serves() bool {
	if c.State != "running" || c.Draining {
		return false
	}
	switch c.Health {
	case "", "none", "healthy":
		return true
	default:
		return false
	}
}
