package lab_test

import (
	"testing"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// The lab's own tests need no uncloud binary; they only serve helper modes.
func TestMain(m *testing.M) { lab.Main(m, false) }
