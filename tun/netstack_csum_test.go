package tun

import (
	"context"
	"io"
	"net/netip"
	"testing"
	"time"
)

// TestNetstackTransmitChecksums makes the receiving netstack verify every
// TCP checksum, as a kernel-TUN peer does, so a stack that sends bad
// checksums fails here instead of only against a kernel.
func TestNetstackTransmitChecksums(t *testing.T) {
	verify := defaultNetstackTuning()
	verify.rxChecksumOffload = false // (which also turns GRO off)
	a, b := newNSPairOpts(t, nsNodeOpts{impl: implOurs}, nsNodeOpts{impl: implOurs, tuning: &verify})
	l, err := b.listen(5301)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		done <- n
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := a.dial(ctx, "tcp", netip.AddrPortFrom(nsAddrB, 5301).String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const size = 8 << 20
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatalf("write: %v (receiver checksum errors %d)", err, b.ns.stack.Stats().TCP.ChecksumErrors.Value())
	}
	c.Close()
	select {
	case n := <-done:
		if n != size {
			t.Fatalf("received %d, want %d", n, size)
		}
	case <-ctx.Done():
		t.Fatalf("transfer stalled; receiver checksum errors %d", b.ns.stack.Stats().TCP.ChecksumErrors.Value())
	}
	if e := b.ns.stack.Stats().TCP.ChecksumErrors.Value(); e != 0 {
		t.Fatalf("receiver saw %d TCP checksum errors", e)
	}
}
