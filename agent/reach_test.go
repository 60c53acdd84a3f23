package agent

import (
	"context"
	"testing"
	"time"
)

func TestReachViewsShareOnePoller(t *testing.T) {
	r := &meshReach{subs: map[chan struct{}]struct{}{}}
	r.cur.Store(&map[string]bool{"self": true})
	dnsCtx := context.Background()
	ingressCtx, stopIngress := context.WithCancel(context.Background())
	defer stopIngress()
	dns, ing := r.view(dnsCtx), r.view(ingressCtx)

	signalled := func(v reachView) bool {
		select {
		case <-v.Changed():
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}
	for _, tc := range []struct {
		name       string
		next       map[string]bool
		stop       bool
		wantSignal [2]bool // dns, ingress
		wantReachB bool
	}{
		{"b comes", map[string]bool{"self": true, "b": true}, false, [2]bool{true, true}, true},
		{"same set: no wake-up", map[string]bool{"self": true, "b": true}, false, [2]bool{false, false}, true},
		{"ingress stopped, b goes", map[string]bool{"self": true}, true, [2]bool{true, false}, false},
	} {
		if tc.stop {
			stopIngress()
			time.Sleep(10 * time.Millisecond) // context.AfterFunc runs in its own goroutine
		}
		r.publish(tc.next)
		if got := [2]bool{signalled(dns), signalled(ing)}; got != tc.wantSignal {
			t.Errorf("%s: signalled (dns, ingress) = %v, want %v", tc.name, got, tc.wantSignal)
		}
		if dns.Reachable("b") != tc.wantReachB || ing.Reachable("b") != tc.wantReachB {
			t.Errorf("%s: Reachable(b) = %v/%v, want %v", tc.name, dns.Reachable("b"), ing.Reachable("b"), tc.wantReachB)
		}
		if !dns.Reachable("self") {
			t.Errorf("%s: self unreachable", tc.name)
		}
	}
	if len(r.subs) != 1 {
		t.Errorf("%d subscriptions after the ingress stopped, want 1", len(r.subs))
	}
}
