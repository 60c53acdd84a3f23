// Package e2e holds multi-host tests that run the real uncloud binary in
// network namespaces built by e2e/lab: two and three machines in kernel TUN
// mode, netstack mode and mixed, talking over a bridge that plays the
// internet. The tests need root (they skip without it) and build the binary
// once per test run (see TestMain).
//
// Run them with `sudo scripts/test`, or alone with
// `sudo go test -count=1 ./e2e/...`. UNCLOUD_BIN=/path/to/uncloud tests a
// prebuilt binary; UNCLOUD_LAB_KEEP=1 keeps logs of a failed run.
package e2e
