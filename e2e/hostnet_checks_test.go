package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// Checks of what a machine's host gets of the mesh (its proxies), shared
// by the tests of restricted hosts.

// curlHost runs curl on h with a 10 s bound.
func curlHost(ctx context.Context, h *lab.Host, args ...string) (string, error) {
	return h.Run(ctx, "curl", append([]string{"-sS", "--max-time", "10"}, args...)...)
}

// curlBody expects curl on h to get a 2xx answer with body want, within
// 20 s.
func curlBody(ctx context.Context, t *testing.T, h *lab.Host, want string, args ...string) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("curl %s on %s", strings.Join(args, " "), h.Name), 20*time.Second, func() error {
		out, err := curlHost(ctx, h, append([]string{"--fail"}, args...)...)
		if err != nil {
			return err
		}
		if out != want {
			return fmt.Errorf("answer %q, want %q", out, want)
		}
		return nil
	})
}

// checkProxies: a host program on h (curl) reaches the web server with
// body want at port on machine m1 (addressed as m1.machine.internal too)
// through h's SOCKS5 proxy (socksPort) and its HTTP proxy on 3128, GET
// and CONNECT; names resolve in the agent, never on the host.
func checkProxies(ctx context.Context, t *testing.T, h *lab.Host, m1 netip.Addr, port int, want string) {
	t.Helper()
	socks := fmt.Sprintf("127.0.0.1:%d", socksPort)
	const httpProxy = "http://127.0.0.1:3128"
	for _, target := range []string{fmt.Sprintf("http://%v:%d/", m1, port), fmt.Sprintf("http://m1.machine.internal:%d/", port)} {
		curlBody(ctx, t, h, want, "--socks5-hostname", socks, target)
		curlBody(ctx, t, h, want, "-x", httpProxy, target)
		curlBody(ctx, t, h, want, "-p", "-x", httpProxy, target)
	}
}
