package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// peer is one thing we measure: how to bring a tunnel up in a lab.
type peer struct {
	name  string
	about string   // one line for the conditions header
	tools []string // commands (or build pseudo-tools) it needs
	start func(ctx context.Context, env *environment, l *lab) (*session, error)
}

// session is a running tunnel between the lab's namespaces.
type session struct {
	target     string      // address the iperf3 client in A connects to
	serverBind string      // address the iperf3 server in B binds to
	pingTarget string      // address pinged from A
	daemons    []*daemon   // tunnel processes, stopped at the end, CPU accounted
	directions []direction // what to measure; default one forward row
	note       string      // e.g. offload state, shown under the table
	// clientNS and serverNS run iperf3 elsewhere than A and B (the
	// container rows); empty means A and B.
	clientNS, serverNS string
	// serverWrap, when set, wraps the iperf3 server's command (and the
	// check that it listens) to run in a namespace inside B.
	serverWrap func([]string) []string
	otherPIDs  []int    // more processes whose CPU counts with the daemons'
	cleanup    []func() // after the daemons stop
}

// direction is one measured row of a peer: forward (A sends to B) or
// reverse (iperf3 -R, B sends to A).
type direction struct {
	suffix  string
	reverse bool
}

func allPeers() []peer {
	return []peer{
		rawPeer(),
		wgDebianPeer(),
		wgCurrentPeer(),
		nebulaPeer(),
		uncloudTUNPeer(),
		uncloudNetstackPeer(),
		uncloudTUNContainersPeer(),
		uncloudVethContainersPeer(),
		uncloudRootlessPeer(),
		uncloudRootlessSlirpPeer(),
	}
}

func peerNames() []string {
	var names []string
	for _, p := range allPeers() {
		names = append(names, p.name)
	}
	return names
}

func selectPeers(only []string) ([]peer, error) {
	all := allPeers()
	if len(only) == 0 {
		return all, nil
	}
	var out []peer
	for _, n := range only {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(all, func(p peer) bool { return p.name == n })
		if i < 0 {
			return nil, fmt.Errorf("--only: unknown peer %q (known: %s)", n, strings.Join(peerNames(), ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func rawPeer() peer {
	return peer{
		name:  "raw",
		about: "plain veth between the namespaces, no tunnel (the limit)",
		start: func(ctx context.Context, env *environment, l *lab) (*session, error) {
			return &session{target: underlayB, serverBind: underlayB, pingTarget: underlayB}, nil
		},
	}
}

// runPeer sets up a lab and the peer's tunnel, measures, and tears it all
// down. Failures become a result row with the error, so one broken peer
// does not cost the others' figures.
func runPeer(ctx context.Context, env *environment, idx int, p peer) []result {
	fail := func(err error) []result {
		env.log.Error("peer failed", "peer", p.name, "err", err)
		return []result{{peer: p.name, err: err}}
	}
	for _, t := range p.tools {
		if err := env.buildErrs[t]; err != nil {
			return fail(err)
		}
	}
	env.log.Info("setting up", "peer", p.name)
	l, err := newLab(ctx, env, idx, p.name)
	if err != nil {
		return fail(err)
	}
	// Cleanup must run even after Ctrl-C, so it gets a context of its own.
	defer l.close(context.WithoutCancel(ctx))

	setupCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	s, err := p.start(setupCtx, env, l)
	cancel()
	if s != nil {
		defer func() {
			for _, d := range s.daemons {
				d.stop()
			}
			for _, f := range s.cleanup {
				f()
			}
		}()
	}
	if err != nil {
		return fail(fmt.Errorf("set up %s: %w", p.name, err))
	}
	if err := waitReachable(ctx, l, s.pingTarget); err != nil {
		return fail(fmt.Errorf("%s: %w", p.name, err))
	}
	dirs := s.directions
	if len(dirs) == 0 {
		dirs = []direction{{}}
	}
	rtt, err := measureRTT(ctx, env, l, s.pingTarget)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", p.name, err))
	}
	env.log.Info("rtt", "peer", p.name, "min_ms", rtt.min, "avg_ms", rtt.avg, "p50_ms", rtt.p50)

	var out []result
	for _, d := range dirs {
		r := result{peer: p.name + d.suffix}
		if !env.opts.rttOnly {
			r = measureRow(ctx, env, l, s, r.peer, d.reverse)
		}
		r.rtt = rtt
		if s.note != "" {
			r.note = p.name + ": " + s.note
		}
		out = append(out, r)
	}
	return out
}

// measureRow runs the one- and four-stream iperf3 runs of one table row
// and, with --profile, an extra profiled run.
func measureRow(ctx context.Context, env *environment, l *lab, s *session, row string, reverse bool) result {
	r := result{peer: row}
	// A peak that could not be reset would be the daemon's lifetime peak,
	// not this row's: then the row has none.
	resetAll := true
	for _, d := range s.daemons {
		if err := resetPeakRSS(d.pid()); err != nil {
			env.log.Warn("peak rss left out", "peer", row, "err", err)
			resetAll = false
		}
	}
	for _, streams := range []int{1, 4} {
		t, err := measureThroughput(ctx, env, l, s, streams, reverse)
		if err != nil {
			r.err = fmt.Errorf("%s, %d stream(s): %w", row, streams, err)
			env.log.Error("measurement failed", "peer", row, "err", r.err)
			return r
		}
		if streams == 1 {
			r.one = t
		} else {
			r.four = t
		}
	}
	if resetAll {
		r.peakRSS = daemonsPeakRSS(env, s.daemons)
	}
	if env.opts.profile != "" {
		path, err := profileRun(ctx, env, l, s, row, reverse)
		if err != nil {
			env.log.Warn("profile failed", "peer", row, "err", err)
		} else {
			env.log.Info("profile written", "peer", row, "path", path)
		}
	}
	return r
}

func (s *session) client(l *lab) string {
	if s.clientNS != "" {
		return s.clientNS
	}
	return l.a
}

func (s *session) server(l *lab) string {
	if s.serverNS != "" {
		return s.serverNS
	}
	return l.b
}

// daemonsPeakRSS returns the largest peak RSS (KiB) of the tunnel daemons
// since their last resetPeakRSS, or 0 when it cannot be read.
func daemonsPeakRSS(env *environment, ds []*daemon) int64 {
	var peak int64
	for _, d := range ds {
		kib, err := peakRSS(d.pid())
		if err != nil {
			env.log.Warn("peak rss left out", "err", err)
			return 0
		}
		peak = max(peak, kib)
	}
	return peak
}
