package tun

import (
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// wireguard-go (on Linux) bounds none of its queues: every packet it takes
// from the TUN or the socket holds a 64 KB message buffer (MaxMessageSize,
// whatever the packet's size) until it is sent or written, and how many it
// takes is up to whoever feeds it. A bulk TCP transfer keeps feeding: the
// sender's congestion window grows as long as nothing is lost, and nothing
// is lost while wireguard-go queues everything. bench/mesh measured 2-3
// thousand packets queued on each side (8-10 ms of queueing at 2.5 Gbit/s)
// and heaps of 180-480 MB; under the agent's GC settings (GOGC=10, a soft
// limit) the collector then ran thousands of times per run, each time
// emptying the buffer pools, and TUN-mode throughput fell from 2.5 to 0.5
// Gbit/s. Kernel WireGuard bounds its queues (1024 packets per peer) and
// drops beyond them; this does the same for wireguard-go from outside, as a
// count of packets taken and not yet handed on, in each direction:
//
//   - outbound: read from the TUN (or netstack), handed on when the sealed
//     datagram reaches the Bind's Send;
//   - inbound: a transport datagram returned by the socket's receive,
//     handed on when the opened packet reaches the TUN's Write.
//
// The reader waits while the count is at the limit. Upstream of the TUN
// reader, the kernel's TUN queue or gVisor's link queue then fills, and
// TCP's own backpressure (TSQ, the send buffer) holds the rest in the
// sending socket; upstream of the socket reader, the socket buffer fills
// and the kernel drops, which TCP answers by slowing down. Either way the
// excess waits or is dropped before it costs a message buffer.

// queueLimit is the number of packets per direction that wireguard-go may
// hold. 256 MTU-sized packets are 0.35 MB, 1.1 ms at 2.5 Gbit/s, two full
// batches (one being sealed, one being read), which is what keeps the
// pipeline busy; the buffers behind them are 16 MB.
const queueLimit = 256

// netstackOutQueueLimit is the outbound limit in netstack mode. gVisor's
// TCP has nothing like the kernel's TCP Small Queues: held back, it queues
// on our link and keeps growing its window, and with 256 its sending fell
// to 0.82-0.99 Gbit/s against 1.35 with 1024 or no bound at all (bench/mesh,
// the agent's GC settings, one round each). 1024 still bounds the buffers
// behind it (64 MB), where nothing did.
const netstackOutQueueLimit = 1024

// queueStall is how long a reader waits at the limit without any packet
// handed on before it assumes the count is off and starts again from zero.
// wireguard-go drops some packets it took (no peer for the destination, a
// failed authentication, a full staging queue), and those never come back
// to be counted as handed on.
const queueStall = 5 * time.Millisecond

// inflight counts the packets of one direction that wireguard-go holds.
type inflight struct {
	limit    int64
	stall    time.Duration
	n        atomic.Int64
	progress chan struct{} // a packet was handed on; capacity 1
	resets   atomic.Uint64 // stalls that reset the count
	waits    atomic.Uint64 // times a reader waited at the limit
	// timers holds stall timers between waits: under a transfer a reader
	// waits hundreds of times a second, and the socket side can have
	// several readers waiting at once (one per receive function).
	timers sync.Pool
}

func newInflight(limit int, stall time.Duration) *inflight {
	return &inflight{limit: int64(limit), stall: stall, progress: make(chan struct{}, 1)}
}

// took counts k packets taken by wireguard-go.
func (q *inflight) took(k int) {
	if k > 0 {
		q.n.Add(int64(k))
	}
}

// handedOn counts k packets that left wireguard-go and wakes a waiting
// reader. The count never goes below zero: a keepalive or handshake that
// was never taken can be counted on the way out.
func (q *inflight) handedOn(k int) {
	if k <= 0 {
		return
	}
	for {
		n := q.n.Load()
		m := max(n-int64(k), 0)
		if q.n.CompareAndSwap(n, m) {
			break
		}
	}
	select {
	case q.progress <- struct{}{}:
	default:
	}
}

// wait blocks while the count is at the limit, at most until no packet has
// been handed on for the stall time.
func (q *inflight) wait() {
	if q.n.Load() < q.limit {
		return
	}
	q.waits.Add(1)
	// Since Go 1.23 a timer's channel is unbuffered: after Stop or Reset
	// no stale expiry can be received, so a pooled timer needs no draining.
	t, _ := q.timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(q.stall)
	} else {
		t.Reset(q.stall)
	}
	defer func() {
		t.Stop()
		q.timers.Put(t)
	}()
	for q.n.Load() >= q.limit {
		select {
		case <-q.progress:
			t.Reset(q.stall)
		case <-t.C:
			q.n.Store(0)
			q.resets.Add(1)
			return
		}
	}
}

// isTransportData reports whether a WireGuard datagram carries a packet: a
// transport message (type 4) longer than its header and tag, which a
// keepalive is not.
func isTransportData(b []byte) bool {
	const keepaliveLen = 32
	return len(b) > keepaliveLen && b[0] == 4 && b[1] == 0 && b[2] == 0 && b[3] == 0
}

// boundedTUN is the TUN side of the bound: its Read waits for room in the
// outbound count and adds what it read; its Write hands inbound packets on.
type boundedTUN struct {
	wgtun.Device
	out, in *inflight
}

func (t *boundedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.wait()
	n, err := t.Device.Read(bufs, sizes, offset)
	t.out.took(n)
	return n, err
}

func (t *boundedTUN) Write(bufs [][]byte, offset int) (int, error) {
	n, err := t.Device.Write(bufs, offset)
	t.in.handedOn(len(bufs))
	return n, err
}
