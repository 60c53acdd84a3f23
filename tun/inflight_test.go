package tun

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

func TestIsTransportData(t *testing.T) {
	data := make([]byte, 32+20)
	data[0] = 4
	keepalive := make([]byte, 32)
	keepalive[0] = 4
	initiation := make([]byte, 148)
	initiation[0] = 1
	odd := make([]byte, 64)
	odd[0], odd[1] = 4, 1
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"transport with a packet", data, true},
		{"keepalive", keepalive, false},
		{"handshake initiation", initiation, false},
		{"type 4 with a non-zero reserved byte", odd, false},
		{"empty", nil, false},
	} {
		if got := isTransportData(c.b); got != c.want {
			t.Errorf("%s: isTransportData = %v, want %v", c.name, got, c.want)
		}
	}
}

// startWait runs q.wait in a goroutine; the channel closes when it returns.
func startWait(q *inflight) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		q.wait()
		close(done)
	}()
	return done
}

// waitReturns runs q.wait and reports how long it took, failing after max.
func waitReturns(t *testing.T, q *inflight, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := startWait(q)
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(max):
		t.Fatalf("wait still blocked after %v (count %d, limit %d)", max, q.n.Load(), q.limit)
		return 0
	}
}

func TestInflightWaitsAtLimit(t *testing.T) {
	q := newInflight(4, time.Hour)
	q.took(3)
	waitReturns(t, q, time.Second) // below the limit: no wait
	q.took(2)

	done := startWait(q)
	select {
	case <-done:
		t.Fatal("wait returned with 5 packets held and a limit of 4")
	case <-time.After(50 * time.Millisecond):
	}
	q.handedOn(1) // 4 held: still at the limit
	select {
	case <-done:
		t.Fatal("wait returned with 4 packets held and a limit of 4")
	case <-time.After(50 * time.Millisecond):
	}
	q.handedOn(1)
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatalf("wait still blocked with %d packets held and a limit of 4", q.n.Load())
	}
	if q.resets.Load() != 0 {
		t.Errorf("resets = %d, want 0: packets were handed on", q.resets.Load())
	}
}

// Packets that wireguard-go dropped are never handed on; a reader stuck at
// the limit with nothing moving starts again after the stall time.
func TestInflightStallResets(t *testing.T) {
	const stall = 30 * time.Millisecond
	q := newInflight(4, stall)
	q.took(10)
	took := waitReturns(t, q, time.Second)
	if took < stall {
		t.Errorf("wait returned after %v, before the stall time %v", took, stall)
	}
	if q.n.Load() != 0 || q.resets.Load() != 1 {
		t.Errorf("after the stall: count %d, resets %d; want 0 and 1", q.n.Load(), q.resets.Load())
	}
}

// Progress pushes the stall back: a slow but moving pipeline is waited for.
func TestInflightProgressDefersStall(t *testing.T) {
	const stall, every = 300 * time.Millisecond, 20 * time.Millisecond
	q := newInflight(4, stall)
	q.took(10)
	go func() {
		for range 7 { // 10 held, limit 4: the 7th makes room
			time.Sleep(every)
			q.handedOn(1)
		}
	}()
	took := waitReturns(t, q, time.Second)
	if q.resets.Load() != 0 {
		t.Errorf("resets = %d, want 0: a packet was handed on every %v", q.resets.Load(), every)
	}
	if took < 7*every {
		t.Errorf("wait returned after %v, before 7 packets were handed on", took)
	}
}

// The stall timer is pooled between waits: one that a wait left running
// (stopped by progress before it fired) must not cut the next wait short,
// and the next wait must still reset on a stall. Progress comes well
// before the stall, so a slow machine (the tests also run under qemu)
// cannot turn the first wait into a stall.
func TestInflightStallTimerReused(t *testing.T) {
	const stall = 150 * time.Millisecond
	q := newInflight(1, stall)
	for round := range 5 {
		q.took(1)
		go func() {
			time.Sleep(10 * time.Millisecond)
			q.handedOn(1)
		}()
		waitReturns(t, q, time.Second) // ended by progress
		if q.resets.Load() != uint64(round) {
			t.Fatalf("round %d: resets = %d after a wait that progress ended", round, q.resets.Load())
		}
		q.took(2)
		took := waitReturns(t, q, time.Second) // ended by the stall
		if took < stall {
			t.Fatalf("round %d: wait returned after %v, before the stall time %v (a stale timer?)", round, took, stall)
		}
		if q.resets.Load() != uint64(round+1) {
			t.Fatalf("round %d: resets = %d, want %d", round, q.resets.Load(), round+1)
		}
	}
}

func TestInflightNeverNegative(t *testing.T) {
	q := newInflight(4, time.Hour)
	q.took(1)
	q.handedOn(3) // a keepalive and a handshake were never taken
	if n := q.n.Load(); n != 0 {
		t.Fatalf("count = %d after handing on more than was taken, want 0", n)
	}
	q.took(4)
	if n := q.n.Load(); n != 4 {
		t.Fatalf("count = %d, want 4", n)
	}
}

// fakeTUN is a wgtun.Device that reads n packets per call.
type fakeTUN struct {
	wgtun.Device
	perRead int
	written int
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := min(f.perRead, len(bufs))
	for i := range n {
		sizes[i] = 20
	}
	return n, nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.written += len(bufs)
	return len(bufs), nil
}

func TestBoundedTUNCounts(t *testing.T) {
	inner := &fakeTUN{perRead: 3}
	b := &boundedTUN{Device: inner, out: newInflight(4, time.Hour), in: newInflight(4, time.Hour)}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes := make([]int, 8)
	if n, _ := b.Read(bufs, sizes, 0); n != 3 {
		t.Fatalf("read %d packets, want 3", n)
	}
	if b.out.n.Load() != 3 {
		t.Fatalf("outbound count %d after reading 3, want 3", b.out.n.Load())
	}
	b.in.took(5)
	if _, err := b.Write(bufs[:2], 0); err != nil {
		t.Fatal(err)
	}
	if b.in.n.Load() != 3 || inner.written != 2 {
		t.Fatalf("after writing 2 of 5: inbound count %d, written %d; want 3 and 2", b.in.n.Load(), inner.written)
	}
}

// TestDeviceBoundsHeldPackets sends 64 MB each way between a kernel-mode
// and a netstack-mode device and samples how many packets wireguard-go
// holds on each side: never more than the limit plus what one read takes
// past it (a batch per reading goroutine). Before the bound, a transfer
// held thousands (bench/mesh: 180-480 MB of heap).
func TestDeviceBoundsHeldPackets(t *testing.T) {
	if !runIsolated(t, false) {
		return
	}
	p := openMixedPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := echoOnce(ctx, p.userspace, serveEcho(t, p.kernel)); err != nil {
		t.Fatalf("mesh not up: %v", err)
	}
	const size = 64 << 20
	for _, c := range []struct {
		name         string
		from, to     *Device
		sent, recvd  *inflight
		sentLimit    int
		receiveLimit int
	}{
		{"netstack sends", p.userspace, p.kernel, p.userspace.bind.out, p.kernel.bind.in, netstackOutQueueLimit, queueLimit},
		{"kernel sends", p.kernel, p.userspace, p.kernel.bind.out, p.userspace.bind.in, queueLimit, queueLimit},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := c.to.Listen(ctx, "tcp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan int64, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					got <- -1
					return
				}
				defer conn.Close()
				n, _ := io.Copy(io.Discard, conn)
				got <- n
			}()
			var maxSent, maxRecvd int64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				for {
					maxSent = max(maxSent, c.sent.n.Load())
					maxRecvd = max(maxRecvd, c.recvd.n.Load())
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Microsecond):
					}
				}
			}()
			// A netstack listener's address has no IP: dial the device's.
			port := ln.Addr().(*net.TCPAddr).Port
			conn, err := c.from.DialContext(ctx, "tcp", netip.AddrPortFrom(c.to.cfg.Address, uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(conn, io.LimitReader(zeroReader{}, size)); err != nil {
				t.Fatalf("send: %v", err)
			}
			conn.Close()
			n := <-got
			close(stop)
			<-sampled
			if n != size {
				t.Fatalf("received %d bytes, want %d", n, size)
			}
			// wait comes before a read, and a read takes up to a batch;
			// the socket has a receiving goroutine per address family.
			batch := int64(c.from.wg.BatchSize())
			if maxSent > int64(c.sentLimit)+batch {
				t.Errorf("sender held %d packets, limit %d + batch %d", maxSent, c.sentLimit, batch)
			}
			if maxRecvd > int64(c.receiveLimit)+2*batch {
				t.Errorf("receiver held %d packets, limit %d + 2 batches of %d", maxRecvd, c.receiveLimit, batch)
			}
			t.Logf("held at most: sender %d, receiver %d", maxSent, maxRecvd)
		})
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
