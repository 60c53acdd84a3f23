package ingress

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// evUp is one connection to a container, owned by a loop: in use by one
// request (owner) or kept idle in the loop's pool for the same container.
// The pool is per loop so that a request and its container connection
// live on one thread; its bounds are upstream's (maxIdlePerHost per
// container, idleTimeout).
type evUp struct {
	l          *evLoop
	fd         int
	b          *backend
	cuts       uint64 // b.cuts when dialed: a newer count means cut
	owner      *evConn
	connecting bool
	reused     bool
	dead       bool
	eof        bool
	idleFrom   time.Time

	evReady
	wbuf sinkBuf // the request, unsent from woff
	woff int
	// rbuf holds the answer: its head must fit, as with upConn's 16 KiB
	// bufio.Reader; the body streams through it.
	rbuf       []byte
	rpos, rend int
}

// getUp takes a kept connection to b or dials one (non-blocking: the
// loop learns of the connect's end from epoll).
func (l *evLoop) getUp(b *backend, sa unix.Sockaddr) (*evUp, error) {
	list := l.idle[b]
	for len(list) > 0 {
		u := list[len(list)-1]
		list = list[:len(list)-1]
		if u.dead {
			continue
		}
		if l.now.Sub(u.idleFrom) >= l.upIdleLimit || u.cuts != b.cuts.Load() {
			u.close()
			continue
		}
		l.idle[b] = list
		u.reused = true
		u.rpos, u.rend, u.eof = 0, 0, false
		return u, nil
	}
	delete(l.idle, b)
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &dialError{fmt.Errorf("dial %s: %w", b.addr, os.NewSyscallError("socket", err))}
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 30)
	u := &evUp{l: l, fd: fd, b: b, cuts: b.cuts.Load(), evReady: evReady{wrReady: true}, rbuf: make([]byte, 16<<10)}
	switch err := unix.Connect(fd, sa); {
	case err == nil:
	case errors.Is(err, unix.EINPROGRESS):
		u.connecting, u.wrReady = true, false
	default:
		unix.Close(fd)
		return nil, &dialError{fmt.Errorf("dial %s: %w", b.addr, os.NewSyscallError("connect", err))}
	}
	if err := l.register(fd, evItem{u: u}); err != nil {
		unix.Close(fd)
		return nil, &dialError{fmt.Errorf("dial %s: %w", b.addr, err)}
	}
	return u, nil
}

// putUp keeps u for the next request to its container.
func (l *evLoop) putUp(u *evUp) {
	u.owner = nil
	u.idleFrom = l.now
	list := l.idle[u.b]
	if len(list) >= l.maxIdle || l.stopping.Load() {
		u.close()
		return
	}
	l.idle[u.b] = append(list, u)
}

func (u *evUp) onEvent(ev uint32) {
	u.note(ev)
	if u.owner == nil {
		// Idle: the container closed it (or sent what nobody asked for).
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			u.close()
		}
		return
	}
	u.owner.upAdvance()
}

func (u *evUp) close() {
	if u.dead {
		return
	}
	u.dead = true
	u.owner = nil
	u.l.forget(u.fd)
	unix.Close(u.fd)
}

// chunkScanner follows a chunked body's framing as it streams through
// (the bytes pass on unchanged, as copyChunked passes them): chunk size
// lines, data, the CRLF after each, the trailer section.
type chunkScanner struct {
	state    chunkState
	size     int64 // of the chunk being read
	digits   int
	lineLen  int
	data     int64 // data bytes so far
	done     bool
	sawDigit bool
}

type chunkState uint8

const (
	csSize      chunkState = iota // hex digits of the size line
	csExt                         // the rest of the size line
	csData                        // size bytes of data
	csDataCR                      // the CRLF after the data
	csDataLF                      //
	csTrailer                     // start of a trailer line or the final blank line
	csTrailerLn                   // rest of a trailer line
	csEndLF                       // LF of the final blank line
)

// maxChunkLine bounds a size or trailer line, as the goroutine path's
// 16 KiB read buffer does.
const maxChunkLine = 16 << 10

var errChunk = errors.New("malformed chunked framing")

// scan returns how many bytes of p belong to the body; fewer than p only
// once done (what follows is not this answer's).
func (s *chunkScanner) scan(p []byte) (int, error) {
	i := 0
	for i < len(p) && !s.done {
		ch := p[i]
		switch s.state {
		case csData:
			k := int(min(int64(len(p)-i), s.size))
			i += k
			s.size -= int64(k)
			s.data += int64(k)
			if s.size == 0 {
				s.state = csDataCR
			}
			continue
		case csSize:
			var v byte
			switch {
			case ch >= '0' && ch <= '9':
				v = ch - '0'
			case ch >= 'a' && ch <= 'f':
				v = ch - 'a' + 10
			case ch >= 'A' && ch <= 'F':
				v = ch - 'A' + 10
			case (ch == ' ' || ch == '\t') && !s.sawDigit:
				s.lineLen++
				i++
				continue
			case ch == ';' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
				if !s.sawDigit {
					return i, errChunk
				}
				s.state = csExt
				continue // csExt takes this byte
			default:
				return i, errChunk
			}
			if s.digits == 15 {
				return i, errChunk
			}
			s.size = s.size<<4 | int64(v)
			s.digits++
			s.sawDigit = true
		case csExt:
			if ch == '\n' {
				s.lineLen, s.digits, s.sawDigit = 0, 0, false
				if s.size == 0 {
					s.state = csTrailer
				} else {
					s.state = csData
				}
				i++
				continue
			}
		case csDataCR:
			switch ch {
			case '\r':
				s.state = csDataLF
			case '\n':
				s.state, s.lineLen = csSize, -1
			default:
				return i, errChunk
			}
		case csDataLF:
			if ch != '\n' {
				return i, errChunk
			}
			s.state, s.lineLen = csSize, -1
		case csTrailer:
			switch ch {
			case '\r':
				s.state = csEndLF
			case '\n':
				s.done = true
			default:
				s.state = csTrailerLn
			}
		case csTrailerLn:
			if ch == '\n' {
				s.lineLen = 0
				s.state = csTrailer
				i++
				continue
			}
		case csEndLF:
			if ch != '\n' {
				return i, errChunk
			}
			s.done = true
		}
		i++
		if s.lineLen++; s.lineLen > maxChunkLine {
			return i, errChunk
		}
	}
	return i, nil
}
