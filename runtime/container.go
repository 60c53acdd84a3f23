package runtime

import "time"

// Container is what the runtime sees of one of this machine's uncloud
// containers. The runtime reports it and writes nothing anywhere; the
// agent turns it into the state's record (it alone knows the state).
type Container struct {
	ID      string
	Name    string
	Service string
	Image   string
	// ImageDigest is what Image was pinned to (ContainerSpec.PinDigest).
	ImageDigest string
	// Address is the container's address on the machine's uncloud
	// network, e.g. "10.210.3.7"; empty while it has none.
	Address string
	// State is Docker's: created, running, restarting, paused, exited, dead.
	State string
	// Health is Docker's health status where the container has a health
	// check: starting, healthy or unhealthy; empty otherwise.
	Health string
	// Ports are the ports published by the spec the container was made
	// from (see ContainerSpec.PortList).
	Ports   []Port
	Created time.Time
}

// Port is a port a container listens on.
type Port struct {
	Port     uint16
	Protocol string // "tcp" or "udp"
	// Name is the published name: the host name for an ingress port.
	Name string
}
