package main

import (
	"fmt"
	"runtime"
)

// The release stamp, the one place that holds it: scripts/release sets
// both with -ldflags "-X main.version=… -X main.commit=…". version is
// also what the agent reports to the other machines (machine ls).
var (
	version = "dev"
	commit  = "unknown"
)

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Printf("uncloud %s (commit %s) %s/%s %s\n", version, commit, runtime.GOOS, runtime.GOARCH, runtime.Version())
	return nil
}
