package main

import (
	"strconv"

	"github.com/uncloud-mesh/uncloud/agent"
)

// registryFlags configure the agent's loopback image registry, through
// which `uncloud image push` sends only the layers a machine lacks. They
// are on agent, init and join (which start the agent).
type registryFlags struct {
	RegistryPort     int   `name:"registry-port" default:"5115" help:"Loopback port of the agent's image registry (127.0.0.1 only; Docker pushes to and pulls from it during 'uncloud image push'); -1 turns it off (pushes then need --method load)." placeholder:"PORT"`
	RegistryMaxBytes int64 `name:"registry-max-bytes" default:"10737418240" help:"Disk the registry may keep for the next push (layers this machine's Docker pushed; least recently used go first)." placeholder:"BYTES"`
}

func (r registryFlags) apply(o *agent.DaemonOptions) {
	o.RegistryPort, o.RegistryMaxBytes = r.RegistryPort, r.RegistryMaxBytes
}

// args are the flags for a background `uncloud agent`.
func (r registryFlags) args() []string {
	return []string{"--registry-port", strconv.Itoa(r.RegistryPort), "--registry-max-bytes", strconv.FormatInt(r.RegistryMaxBytes, 10)}
}
