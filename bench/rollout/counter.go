package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// counter reads a probe's running totals.
type counter struct{ p *lab.Process }

// now is the probe's last "count OK FAILED" line (0, 0 without a probe).
func (c counter) now() (ok, failed int) {
	if c.p == nil {
		return 0, 0
	}
	lines := strings.Split(strings.TrimSpace(c.p.Output()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if n, _ := fmt.Sscanf(lines[i], "count %d %d", &ok, &failed); n == 2 {
			return ok, failed
		}
	}
	return 0, 0
}

// waitOK waits until the probe has n more answers than at start.
func (c counter) waitOK(ctx context.Context, n int, timeout time.Duration) error {
	start, _ := c.now()
	deadline := time.Now().Add(timeout)
	for {
		if ok, _ := c.now(); ok-start >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("probe got fewer than %d answers in %v:\n%s", n, timeout, tail(c.p.Output(), 600))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
