package tun

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// netstackTuning holds the knobs that decide netstack throughput. gVisor's
// defaults suit a sandboxed application on a LAN, not a tunnel endpoint that
// should keep up with a kernel TUN: SACK is off, buffers are small (1 MB
// receive, a window that caps throughput at high RTT), receive buffer
// auto-tuning is off. The knobs are a type, not constants, so the benchmark
// can measure each one against the others in the same run.
type netstackTuning struct {
	// batch is BatchSize: packets per Read and Write call.
	batch int
	// gro coalesces inbound segments of a flow before the stack sees them.
	gro bool
	// gso lets TCP build segments of up to 64 KB: split by gVisor
	// (GVisorGSOSupported) or by our link (HostGSOSupported).
	gso stack.SupportedGSO
	// rxChecksumOffload skips verifying inbound TCP/UDP checksums, which
	// WireGuard's authentication already covers.
	rxChecksumOffload bool

	sack bool
	// noRACK turns RACK loss detection off (classic dupack recovery with
	// SACK scoreboard stays).
	noRACK   bool
	bufMax   int // send and receive buffer maximum; 0 keeps gVisor's
	moderate bool
	cc       string // "cubic" or "reno"; "" keeps gVisor's
}

// defaultNetstackTuning is what the benchmark measured best here (see
// netstack_bench_test.go for the figures).
func defaultNetstackTuning() netstackTuning {
	return netstackTuning{
		batch:             netstackBatchSize,
		gro:               true,
		gso:               stack.HostGSOSupported,
		rxChecksumOffload: true,
		sack:              true,
		// 8 MB covers 3 Gbit/s at 20 ms RTT; it bounds memory per
		// connection.
		bufMax:   8 << 20,
		moderate: true,
		// reno beat cubic in 5 of 5 interleaved runs of
		// BenchmarkNetstackTuning (3.9-6.2 against 3.7-5.0 Gbit/s, same
		// CPU per Gbit). Likely cause, not verified: gVisor's cubic
		// leaves slow start early (HyStart) as queueing delay grows.
		cc: "reno",
	}
}

// untunedNetstackTuning is gVisor's defaults and one packet per Read, as
// upstream tun/netstack runs, but over our link endpoint: the benchmark's
// baseline for what the knobs are worth.
func untunedNetstackTuning() netstackTuning {
	return netstackTuning{batch: 1}
}

func (t netstackTuning) apply(s *stack.Stack) error {
	set := func(what string, opt tcpip.SettableTransportProtocolOption) error {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: set tcp %s: %v", what, err)
		}
		return nil
	}
	sack := tcpip.TCPSACKEnabled(t.sack)
	if err := set("sack", &sack); err != nil {
		return err
	}
	if t.bufMax > 0 {
		const bufMin, bufDefault = 4 << 10, 1 << 20
		snd := tcpip.TCPSendBufferSizeRangeOption{Min: bufMin, Default: bufDefault, Max: t.bufMax}
		if err := set("send buffer range", &snd); err != nil {
			return err
		}
		rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: bufMin, Default: bufDefault, Max: t.bufMax}
		if err := set("receive buffer range", &rcv); err != nil {
			return err
		}
	}
	if t.noRACK {
		recovery := tcpip.TCPRecovery(0)
		if err := set("loss recovery", &recovery); err != nil {
			return err
		}
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(t.moderate)
	if err := set("receive buffer moderation", &moderate); err != nil {
		return err
	}
	if t.cc != "" {
		cc := tcpip.CongestionControlOption(t.cc)
		if err := set("congestion control", &cc); err != nil {
			return err
		}
	}
	return nil
}
