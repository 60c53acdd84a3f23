package tun

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TCP tuning of the netstack. gVisor's defaults suit a sandboxed
// application on a LAN, not a tunnel endpoint that should keep up with a
// kernel TUN: SACK is off, buffers are small (1 MB receive, so a window
// that caps throughput at high RTT) and auto-tuning of the receive buffer
// is off.
const (
	netstackTCPBufMin     = 4 << 10
	netstackTCPSendBufDef = 1 << 20
	netstackTCPRecvBufDef = 1 << 20
	// The maxima bound memory per connection; 8 MB covers 3 Gbit/s at
	// 20 ms RTT.
	netstackTCPBufMax = 8 << 20
	// netstackCongestion is the congestion control the benchmark measured
	// best here (see netstack_bench_test.go).
	netstackCongestion = "cubic"
)

func tuneStack(s *stack.Stack) error {
	set := func(what string, opt tcpip.SettableTransportProtocolOption) error {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("netstack: set tcp %s: %v", what, err)
		}
		return nil
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := set("sack", &sack); err != nil {
		return err
	}
	sndBuf := tcpip.TCPSendBufferSizeRangeOption{Min: netstackTCPBufMin, Default: netstackTCPSendBufDef, Max: netstackTCPBufMax}
	if err := set("send buffer range", &sndBuf); err != nil {
		return err
	}
	rcvBuf := tcpip.TCPReceiveBufferSizeRangeOption{Min: netstackTCPBufMin, Default: netstackTCPRecvBufDef, Max: netstackTCPBufMax}
	if err := set("receive buffer range", &rcvBuf); err != nil {
		return err
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := set("receive buffer moderation", &moderate); err != nil {
		return err
	}
	cc := tcpip.CongestionControlOption(netstackCongestion)
	if err := set("congestion control", &cc); err != nil {
		return err
	}
	return nil
}
