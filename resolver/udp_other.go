//go:build !linux

package resolver

import (
	"context"
	"net"
)

// serveBatch has no recvmmsg here: one datagram at a time.
func (s *Server) serveBatch(ctx context.Context, c *net.UDPConn) error {
	return s.serveGeneric(ctx, c)
}
