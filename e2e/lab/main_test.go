package lab_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// The lab's own tests need no uncloud binary; they serve the lab's helper
// modes and one of their own.
func TestMain(m *testing.M) {
	lab.Main(m, lab.MainOptions{Helpers: map[string]lab.HelperFunc{"addrs": helperAddrs}})
}

// helperAddrs prints the addresses of the namespace it runs in: Go code
// that sees the host's network, not the test's.
func helperAddrs(_ context.Context, _ []string, stdout io.Writer) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range addrs {
		fmt.Fprintln(stdout, a)
	}
	return nil
}
