// Package ui owns the web dashboard that every agent serves on its local
// API: server-rendered pages (overview, mesh picture, services, logs,
// deploy), their live updates pushed as server-sent events from the
// state's watch and the reachability view, the per-machine view another
// machine's dashboard asks for over the machine API, and the login gate
// (one-time secret, session cookie, cross-origin checks) that `uncloud ui`
// puts in front of it on the user's loopback.
package ui
