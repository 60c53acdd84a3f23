package tun

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestNetstackReadYields checks that Read lets the goroutines that are
// ready run before it takes the next batch, even when packets are waiting:
// with one CPU, that is what lets wireguard-go encrypt and send the previous
// batch before the reader takes the next one (see netstack.Read). Go's
// scheduler now and then prefers its global queue, so a few misses are
// allowed; without the yield the goroutine never runs first.
func TestNetstackReadYields(t *testing.T) {
	n, err := newNetstack(netstackConfig{Address: netip.MustParseAddr("10.210.1.1"), MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	bufs := [][]byte{make([]byte, 2048)}
	sizes := make([]int, 1)

	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	const rounds = 20
	yielded := 0
	for i := 0; i < rounds; i++ {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(make([]byte, header.IPv4MinimumSize)),
		})
		var l stack.PacketBufferList
		l.PushBack(pkt)
		if _, terr := n.link.WritePackets(l); terr != nil {
			t.Fatalf("queue a packet: %v", terr)
		}
		pkt.DecRef()

		var ran atomic.Bool
		done := make(chan struct{})
		go func() {
			ran.Store(true)
			close(done)
		}()
		got, err := n.Read(bufs, sizes, 0)
		if err != nil || got != 1 {
			t.Fatalf("Read = %d, %v; want the queued packet", got, err)
		}
		if ran.Load() {
			yielded++
		}
		<-done
	}
	if yielded < rounds*3/4 {
		t.Fatalf("a ready goroutine ran before Read returned in %d of %d rounds, want at least %d", yielded, rounds, rounds*3/4)
	}
}
