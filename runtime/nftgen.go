package runtime

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RulesetGeneration returns the generation of this network namespace's
// nftables ruleset: the kernel raises it with every change to any table,
// whoever makes it (Docker, firewalld, an administrator, iptables-nft,
// this agent). Equal generations mean an unchanged ruleset, so a caller
// that re-applies its rules to repair outside changes can skip running
// iptables-restore and nft when the generation did not move. One netlink
// round trip, no process. Changes to iptables-legacy tables do not move
// it (see IPTables.NFTBackend).
func RulesetGeneration() (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("nftables generation: receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("nftables generation: bind: %w", err)
	}
	const seq = 1
	req := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], seq)
	req[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC // nfgenmsg: family, version, resource id
	req[unix.NLMSG_HDRLEN+1] = unix.NFNETLINK_V0
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("nftables generation: send: %w", err)
	}
	buf := make([]byte, os.Getpagesize())
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("nftables generation: receive: %w", err)
		}
		gen, done, err := parseGeneration(buf[:n], seq)
		if err != nil || done {
			return gen, err
		}
	}
}

// parseGeneration reads NFT_MSG_NEWGEN's NFTA_GEN_ID from one netlink
// datagram; done is false when the datagram held no answer to seq.
func parseGeneration(b []byte, seq uint32) (gen uint32, done bool, err error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return 0, false, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Seq != seq {
			continue
		}
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return 0, true, fmt.Errorf("nftables generation: %w", unix.Errno(-errno))
				}
			}
			continue // an acknowledgement
		case unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN:
			if len(m.Data) < 4 {
				return 0, true, fmt.Errorf("nftables generation: short answer")
			}
			// The attributes follow nfgenmsg (4 bytes).
			for a := m.Data[4:]; len(a) >= unix.SizeofRtAttr; {
				l := int(binary.NativeEndian.Uint16(a[0:]))
				typ := binary.NativeEndian.Uint16(a[2:]) &^ unix.NLA_F_NESTED
				if l < unix.SizeofRtAttr || l > len(a) {
					break
				}
				if typ == unix.NFTA_GEN_ID && l >= unix.SizeofRtAttr+4 {
					return binary.BigEndian.Uint32(a[unix.SizeofRtAttr:]), true, nil
				}
				a = a[min(len(a), (l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1)):]
			}
			return 0, true, fmt.Errorf("nftables generation: no generation in the answer")
		}
	}
	return 0, false, nil
}
