package e2e

import (
	"testing"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestMain builds the uncloud binary once for all tests (hosts start it
// from there, which keeps a host cheap) and serves the lab's helper modes
// when a test re-executes this binary inside a host namespace.
func TestMain(m *testing.M) {
	lab.Main(m, lab.MainOptions{BuildUncloud: true, Helpers: e2eHelpers()})
}
