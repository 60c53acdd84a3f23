package main

import "github.com/uncloud-mesh/uncloud/api"

// stepLine is one step of a deploy or rollback as deploy, rollback and the
// dashboard's deploy print it: "ACTION SERVICE [CONTAINER] [on MACHINE][: DETAIL]".
func stepLine(e api.DeployEvent) string {
	line := e.Action + " " + e.Service
	if e.Container != "" {
		line += " " + e.Container
	}
	if e.Machine != "" {
		line += " on " + e.Machine
	}
	if e.Detail != "" {
		line += ": " + e.Detail
	}
	return line
}
