//go:build !linux

package ingress

import "net"

// evGroup is the epoll event loops of evloop_linux.go; elsewhere every
// connection takes the goroutine path.
type evGroup struct{}

func newEvGroup(*fastServer) *evGroup { return nil }

func (*evGroup) adopt(net.Conn) bool { return false }

func (*evGroup) stop(force bool) {}

func (*evGroup) served() uint64 { return 0 }
