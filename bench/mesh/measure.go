package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const iperfPort = "5201"

// waitReachable pings target from A until it answers: a tunnel is up only
// once its handshake is done, and the first packet triggers the handshake.
func waitReachable(ctx context.Context, l *lab, target string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		_, err := runCmd(ctx, nsCmd(l.a, -1, "ping", "-n", "-c", "1", "-W", "1", target)...)
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not reachable from %s within 30s: %w", target, l.a, last)
}

type rttStats struct {
	min, avg, p50, max float64 // milliseconds
	sent, recv         int
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// measureRTT pings an idle tunnel (no iperf3 running) from A.
func measureRTT(ctx context.Context, env *environment, l *lab, target string) (rttStats, error) {
	n := env.opts.pings
	interval := fmt.Sprintf("%.3f", env.opts.pingEvery.Seconds())
	budget := time.Duration(n)*env.opts.pingEvery + 10*time.Second
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	out, err := runCmd(ctx, nsCmd(l.a, -1, "ping", "-n", "-c", strconv.Itoa(n), "-i", interval, "-W", "1", target)...)
	rtt := parsePing(out, n)
	if rtt.recv == 0 {
		return rttStats{}, fmt.Errorf("ping %s from %s: no replies: %w", target, l.a, err)
	}
	return rtt, nil
}

// parsePing summarises ping's output for sent echo requests.
func parsePing(out []byte, sent int) rttStats {
	var times []float64
	for _, m := range pingTime.FindAllStringSubmatch(string(out), -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			times = append(times, v)
		}
	}
	if len(times) == 0 {
		return rttStats{sent: sent}
	}
	slices.Sort(times)
	var sum float64
	for _, t := range times {
		sum += t
	}
	return rttStats{
		min:  times[0],
		avg:  sum / float64(len(times)),
		p50:  median(times),
		max:  times[len(times)-1],
		sent: sent,
		recv: len(times),
	}
}

// loadedPing pings target from A while iperf3 runs, starting once the
// transfer is past its first second (slow start) and ending a second
// before it, every 100 ms: what a packet of another flow waits behind the
// queues a bulk transfer builds in the tunnel. It returns once the pings
// are done; a failure only leaves the figure out.
func loadedPing(ctx context.Context, l *lab, target string, dur time.Duration) rttStats {
	const every = 100 * time.Millisecond
	n := int((dur - 2*time.Second) / every)
	if n < 5 {
		return rttStats{}
	}
	select {
	case <-ctx.Done():
		return rttStats{}
	case <-time.After(time.Second):
	}
	out, _ := runCmd(ctx, nsCmd(l.a, -1, "ping", "-n", "-c", strconv.Itoa(n), "-i", "0.1", "-W", "1", target)...)
	return parsePing(out, n)
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// throughput is one iperf3 run's outcome.
type throughput struct {
	gbps     float64  // receiver's bits/s, in Gbit/s
	gbits    float64  // data received, in Gbit
	retrans  int      // sender's TCP retransmits
	loaded   rttStats // ping through the tunnel during the run
	cpuProc  float64  // CPU s of iperf3 client, server and tunnel daemons
	cpuHost  float64  // CPU s of the whole machine (/proc/stat)
	duration float64  // seconds
}

func (t throughput) procPerGbit() float64 { return perGbit(t.cpuProc, t.gbits) }
func (t throughput) hostPerGbit() float64 { return perGbit(t.cpuHost, t.gbits) }

func perGbit(cpu, gbits float64) float64 {
	if gbits <= 0 {
		return 0
	}
	return cpu / gbits
}

// measureThroughput runs iperf3 once and logs the outcome.
func measureThroughput(ctx context.Context, env *environment, l *lab, s *session, streams int, reverse bool) (throughput, error) {
	t, err := iperfOnce(ctx, env, l, s, streams, reverse)
	if err != nil {
		return throughput{}, err
	}
	env.log.Info("iperf3", "target", s.target, "streams", streams, "reverse", reverse,
		"gbps", round(t.gbps, 3), "retrans", t.retrans,
		"cpu_proc_s_per_gbit", round(t.procPerGbit(), 3), "cpu_host_s_per_gbit", round(t.hostPerGbit(), 3))
	return t, nil
}

// iperfOnce starts a one-off iperf3 server in B, runs the client in A and
// accounts the CPU of both and of the tunnel daemons over the run.
func iperfOnce(ctx context.Context, env *environment, l *lab, s *session, streams int, reverse bool) (throughput, error) {
	dur := env.opts.duration
	ctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()

	logPath := filepath.Join(l.dir, fmt.Sprintf("iperf3-server-%d-%v.log", streams, reverse))
	// --one-off: the server exits after this test, so its rusage covers
	// exactly this test.
	server := []string{"iperf3", "-s", "--one-off", "-B", s.serverBind, "-p", iperfPort}
	ss := []string{"ss", "-Hltn"}
	if s.serverWrap != nil {
		server, ss = s.serverWrap(server), s.serverWrap(ss)
	}
	srv, err := startDaemon("iperf3 server", logPath, nil, nsCmd(s.server(l), l.pin.server, server...)...)
	if err != nil {
		return throughput{}, err
	}
	defer srv.stop()
	if err := waitListening(ctx, nsCmd(s.server(l), -1, ss...), s.serverBind, srv); err != nil {
		return throughput{}, err
	}

	before, err := daemonsCPU(s.daemons, s.otherPIDs)
	if err != nil {
		return throughput{}, err
	}
	hostBefore, err := hostCPU()
	if err != nil {
		return throughput{}, err
	}
	args := []string{"iperf3", "-c", s.target, "-p", iperfPort, "-t", strconv.Itoa(int(dur.Seconds())),
		"-P", strconv.Itoa(streams), "-J"}
	if reverse {
		args = append(args, "-R")
	}
	client, err := startDaemon("iperf3 client", filepath.Join(l.dir, fmt.Sprintf("iperf3-client-%d-%v.json", streams, reverse)), nil,
		nsCmd(s.client(l), l.pin.client, args...)...)
	if err != nil {
		return throughput{}, err
	}
	loaded := make(chan rttStats, 1)
	go func() { loaded <- loadedPing(ctx, l, s.pingTarget, dur) }()
	select {
	case <-client.done:
	case <-ctx.Done():
		client.stop()
		return throughput{}, fmt.Errorf("iperf3 -c %s: %w", s.target, ctx.Err())
	}
	hostAfter, err := hostCPU()
	if err != nil {
		return throughput{}, err
	}
	after, err := daemonsCPU(s.daemons, s.otherPIDs)
	if err != nil {
		return throughput{}, err
	}
	// The server exits on its own after a one-off test; give it a moment.
	select {
	case <-srv.done:
	case <-time.After(3 * time.Second):
	}
	srv.stop()

	t, err := parseIperf([]byte(client.out.String()))
	if err != nil {
		return throughput{}, fmt.Errorf("iperf3 -c %s -P %d (reverse %v): %w", s.target, streams, reverse, err)
	}
	t.loaded = <-loaded
	t.cpuProc = after - before + client.rusageSeconds() + srv.rusageSeconds()
	t.cpuHost = hostAfter - hostBefore
	return t, nil
}

func daemonsCPU(ds []*daemon, more []int) (float64, error) {
	var sum float64
	for _, pid := range more {
		c, err := processCPU(pid)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum += c
	}
	for _, d := range ds {
		if gone, why := d.exited(); gone {
			return 0, fmt.Errorf("tunnel daemon died: %s", why)
		}
		c, err := processCPU(d.pid())
		if err != nil {
			return 0, fmt.Errorf("%s: %w", d.name, err)
		}
		sum += c
	}
	return sum, nil
}

// waitListening polls ss in ns until a TCP socket listens on addr:5201.
func waitListening(ctx context.Context, ssCmd []string, addr string, srv *daemon) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	want := addr + ":" + iperfPort
	for {
		out, _ := runCmd(ctx, ssCmd...)
		if strings.Contains(string(out), want) {
			return nil
		}
		if gone, why := srv.exited(); gone {
			return fmt.Errorf("iperf3 server (%s): %s", strings.Join(ssCmd, " "), why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("iperf3 server not listening on %s (%s): %w", want, strings.Join(ssCmd, " "), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// iperfJSON is the part of iperf3 -J output we use.
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Seconds       float64 `json:"seconds"`
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds       float64 `json:"seconds"`
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

func parseIperf(out []byte) (throughput, error) {
	var j iperfJSON
	// iperf3 may print warnings before the JSON object.
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return throughput{}, fmt.Errorf("parse iperf3 JSON: %w: %s", err, tail(string(out), 300))
	}
	if j.Error != "" {
		return throughput{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := j.End.SumReceived
	if r.BitsPerSecond == 0 {
		return throughput{}, fmt.Errorf("iperf3 reported 0 bit/s received")
	}
	return throughput{
		gbps:     r.BitsPerSecond / 1e9,
		gbits:    r.Bytes * 8 / 1e9,
		retrans:  j.End.SumSent.Retransmits,
		duration: r.Seconds,
	}, nil
}

func round(v float64, digits int) float64 {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	r, _ := strconv.ParseFloat(s, 64)
	return r
}
