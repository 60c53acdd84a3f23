package lab

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrNetemUnsupported means the kernel has no sch_netem (some CI and
// container kernels ship without it). Tests needing netem should skip.
var ErrNetemUnsupported = errors.New("kernel has no netem qdisc (sch_netem)")

// Netem describes impairment added to a host's link, in each direction.
type Netem struct {
	Delay  time.Duration // one-way, so RTT grows by 2×Delay
	Jitter time.Duration
	Loss   float64 // percent, 0..100
}

func (n Netem) args() []string {
	args := []string{"netem"}
	if n.Delay > 0 {
		args = append(args, "delay", fmt.Sprintf("%dus", n.Delay.Microseconds()))
		if n.Jitter > 0 {
			args = append(args, fmt.Sprintf("%dus", n.Jitter.Microseconds()))
		}
	}
	if n.Loss > 0 {
		args = append(args, "loss", strconv.FormatFloat(n.Loss, 'f', -1, 64)+"%")
	}
	return args
}

// SetNetem impairs the host's link in both directions: on eth0 (outbound)
// and on its far end (inbound). A zero Netem removes the impairment.
func (h *Host) SetNetem(ctx context.Context, n Netem) error {
	for _, end := range []struct{ ns, dev string }{{h.NS, "eth0"}, {h.farNS, h.farIf}} {
		var err error
		if n == (Netem{}) {
			_, err = nsRun(ctx, end.ns, "tc", "qdisc", "del", "dev", end.dev, "root")
			if err != nil && strings.Contains(err.Error(), "No such file") {
				err = nil // nothing to remove
			}
		} else {
			_, err = nsRun(ctx, end.ns, "tc", append([]string{"qdisc", "replace", "dev", end.dev, "root"}, n.args()...)...)
			if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
				err = fmt.Errorf("%w: %w", ErrNetemUnsupported, err)
			}
		}
		if err != nil {
			return fmt.Errorf("netem %+v on %s: %w", n, h.Name, err)
		}
	}
	return nil
}

// NetemSupported reports whether tc netem works here, trying it on the
// internet namespace's loopback.
func (l *Lab) NetemSupported(ctx context.Context) bool {
	if _, err := nsRun(ctx, l.internet, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"); err != nil {
		return false
	}
	_, _ = nsRun(ctx, l.internet, "tc", "qdisc", "del", "dev", "lo", "root")
	return true
}
