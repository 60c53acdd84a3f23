package main

import (
	"fmt"
	"runtime"
)

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Printf("uncloud %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
	return nil
}
