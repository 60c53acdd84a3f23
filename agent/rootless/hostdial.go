package rootless

// The host-side dialer: why it exists, and its protocol.
//
// Inside rootlesskit's network namespace the agent's 127.0.0.1 is the
// namespace's, not the host's, and it cannot make a socket in the host's
// network namespace (joining it back needs CAP_SYS_ADMIN over the host's
// user namespace). So before the agent enters, its starter starts a
// helper (`uncloud agent-hostside`) that stays in the host's namespaces,
// joined to the agent by a socketpair. For a mesh connection to an
// exposed port (or a mesh source's UDP flow) the agent asks the helper to
// dial the host's 127.0.0.1:PORT; the helper answers with the connected
// socket itself (SCM_RIGHTS, for UDP a socket connect()ed there), and
// the agent splices to it (or forwards datagrams) with no copy through
// the helper. A socket keeps the namespace it was made in, wherever its file
// descriptor goes.
//
// The socketpair is SOCK_SEQPACKET, so each message is one datagram:
//
//	request: "ID PROTO PORT"     (ID 1..2^32-1, PROTO tcp or udp, PORT 1..65535; at most maxRequest bytes)
//	reply:   "ID ok" with one descriptor, or "ID err REASON" (REASON at most maxReason bytes)
//
// The helper dials only 127.0.0.1, only ports its Allowed check passes
// (the ports the data dir's settings expose), at most maxInFlight at a
// time; anything else is answered err. Request ids let answers come back
// out of order, so one slow dial holds up no other. The helper exits when
// the agent's end closes (the agent exited: an upgrade's re-exec keeps
// it open).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxRequest bounds a request: "4294967295 tcp 65535" is 20 bytes.
	maxRequest = 32
	// maxReason bounds an error reply's reason.
	maxReason = 256
	// maxReply bounds a reply datagram.
	maxReply = 16 + maxReason
	// maxInFlight bounds the helper's dials at once; more are refused
	// (the agent resets that mesh connection, its peer retries).
	maxInFlight = 64
	// hostDialTimeout bounds one dial to the host's loopback, which
	// answers at once unless the host is overloaded.
	hostDialTimeout = 5 * time.Second
)

// request is one parsed request.
type request struct {
	id    uint32
	proto string
	port  uint16
}

func (r request) String() string { return fmt.Sprintf("%d %s %d", r.id, r.proto, r.port) }

// parseRequest reads a request datagram; the error says what is wrong
// with it (the id is returned when it was readable, to answer it).
func parseRequest(b []byte) (request, error) {
	if len(b) > maxRequest {
		return request{}, fmt.Errorf("request longer than %d bytes", maxRequest)
	}
	f := strings.Split(string(b), " ")
	if len(f) != 3 {
		return request{}, fmt.Errorf("request %q is not 'ID PROTO PORT'", b)
	}
	id, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || id == 0 {
		return request{}, fmt.Errorf("request %q: id %q is not 1..4294967295", b, f[0])
	}
	r := request{id: uint32(id), proto: f[1]}
	if r.proto != "tcp" && r.proto != "udp" {
		return r, fmt.Errorf("request %q: protocol %q is neither tcp nor udp", b, f[1])
	}
	port, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil || port == 0 {
		return r, fmt.Errorf("request %q: %q is not a port 1..65535", b, f[2])
	}
	r.port = uint16(port)
	return r, nil
}

// errReply is a reply "ID err REASON", the reason cut to maxReason.
func errReply(id uint32, reason string) []byte {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	return []byte(fmt.Sprintf("%d err %s", id, reason))
}

// HostDialServer is the helper's side: it answers the agent's requests
// on one end of the socketpair.
type HostDialServer struct {
	// Allowed says whether the host's 127.0.0.1:port may be dialed for
	// the mesh (nil error): only exposed ports.
	Allowed func(proto string, port uint16) error
	Log     *slog.Logger
}

// Serve answers requests on conn until the other end closes (nil) or ctx
// ends.
func (s *HostDialServer) Serve(ctx context.Context, conn *net.UnixConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxInFlight)
	buf := make([]byte, maxRequest+1)
	for {
		// No control buffer: descriptors the other end might send are
		// discarded (and closed) by the kernel.
		n, _, flags, _, err := conn.ReadMsgUnix(buf, nil)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil // ended, or the agent's end closed
			}
			return fmt.Errorf("read a host dial request: %w", err)
		}
		if n == 0 && flags == 0 {
			return nil // the agent's end closed: SOCK_SEQPACKET reads EOF as 0
		}
		msg := buf[:n]
		if flags&unix.MSG_TRUNC != 0 {
			msg = buf[:maxRequest+1] // longer than allowed: parseRequest says so
		}
		req, err := parseRequest(msg)
		if err != nil {
			s.log().Warn("host dial: bad request", "err", err)
			conn.Write(errReply(req.id, err.Error()))
			continue
		}
		if err := s.Allowed(req.proto, req.port); err != nil {
			conn.Write(errReply(req.id, err.Error()))
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			conn.Write(errReply(req.id, fmt.Sprintf("%d host dials in flight already", maxInFlight)))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.answer(ctx, conn, req)
		}()
	}
}

func (s *HostDialServer) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// answer dials the host's 127.0.0.1 for req and sends the socket back.
func (s *HostDialServer) answer(ctx context.Context, conn *net.UnixConn, req request) {
	d := net.Dialer{Timeout: hostDialTimeout}
	c, err := d.DialContext(ctx, req.proto, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(req.port))))
	if err != nil {
		conn.Write(errReply(req.id, err.Error()))
		return
	}
	defer c.Close()
	f, err := c.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		conn.Write(errReply(req.id, fmt.Sprintf("take the socket of %s: %v", c.LocalAddr(), err)))
		return
	}
	defer f.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(fmt.Sprintf("%d ok", req.id)), unix.UnixRights(int(f.Fd())), nil); err != nil {
		s.log().Warn("host dial: send the socket back", "request", req.String(), "err", err)
	}
}

// HostDialer is the agent's side: it asks the helper for sockets on the
// host's loopback.
type HostDialer struct {
	conn *net.UnixConn

	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan dialReply
	err     error // set when the helper's end is gone
	done    chan struct{}
}

type dialReply struct {
	f   *os.File
	err error
}

// NewHostDialer talks to the helper over conn (its own: Close closes it).
func NewHostDialer(conn *net.UnixConn) *HostDialer {
	d := &HostDialer{conn: conn, pending: map[uint32]chan dialReply{}, done: make(chan struct{})}
	go d.read()
	return d
}

// Close stops the dialer; dials in flight fail.
func (d *HostDialer) Close() error {
	err := d.conn.Close()
	<-d.done
	return err
}

func (d *HostDialer) read() {
	defer close(d.done)
	buf := make([]byte, maxReply)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var err error
	for {
		n, oobn, _, _, rerr := d.conn.ReadMsgUnix(buf, oob)
		if rerr == nil && n == 0 && oobn == 0 {
			rerr = errors.New("the host-side helper closed its end")
		}
		if rerr != nil {
			err = fmt.Errorf("the host-side helper is gone: %w", rerr)
			break
		}
		files := receivedFiles(oob[:oobn])
		id, rep := parseReply(buf[:n], files)
		d.mu.Lock()
		ch, ok := d.pending[id]
		delete(d.pending, id)
		d.mu.Unlock()
		if !ok {
			// An answer nobody waits for (its dial gave up, or it was
			// asked by the process before an upgrade).
			if rep.f != nil {
				rep.f.Close()
			}
			continue
		}
		ch <- rep
	}
	d.mu.Lock()
	d.err = err
	for id, ch := range d.pending {
		ch <- dialReply{err: err}
		delete(d.pending, id)
	}
	d.mu.Unlock()
}

// receivedFiles are the descriptors of a control message, as files.
func receivedFiles(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var out []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			out = append(out, os.NewFile(uintptr(fd), "host socket"))
		}
	}
	return out
}

// parseReply reads "ID ok" (with exactly one of files) or "ID err
// REASON"; files it does not use are closed.
func parseReply(b []byte, files []*os.File) (uint32, dialReply) {
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	idText, rest, _ := strings.Cut(string(b), " ")
	id64, err := strconv.ParseUint(idText, 10, 32)
	if err != nil {
		closeAll(files)
		return 0, dialReply{err: fmt.Errorf("host-side helper's reply %q has no id", b)}
	}
	id := uint32(id64)
	if rest == "ok" {
		if len(files) != 1 {
			closeAll(files)
			return id, dialReply{err: fmt.Errorf("host-side helper answered ok with %d sockets", len(files))}
		}
		return id, dialReply{f: files[0]}
	}
	closeAll(files)
	if reason, ok := strings.CutPrefix(rest, "err "); ok {
		return id, dialReply{err: errors.New(reason)}
	}
	return id, dialReply{err: fmt.Errorf("host-side helper's reply %q is neither ok nor err", b)}
}

// Dial returns a connection to the host's 127.0.0.1:port, made by the
// helper outside the namespace.
func (d *HostDialer) Dial(ctx context.Context, proto string, port uint16) (net.Conn, error) {
	what := fmt.Sprintf("host 127.0.0.1:%d/%s", port, proto)
	ch := make(chan dialReply, 1)
	d.mu.Lock()
	if d.err != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", what, d.err)
	}
	d.next++
	if d.next == 0 {
		d.next = 1
	}
	id := d.next
	d.pending[id] = ch
	d.mu.Unlock()
	forget := func() {
		d.mu.Lock()
		delete(d.pending, id)
		d.mu.Unlock()
	}
	if _, err := d.conn.Write([]byte(request{id: id, proto: proto, port: port}.String())); err != nil {
		forget()
		return nil, fmt.Errorf("dial %s: ask the host-side helper: %w", what, err)
	}
	select {
	case <-ctx.Done():
		forget()
		// A reply that still comes is closed by read.
		return nil, fmt.Errorf("dial %s: %w", what, ctx.Err())
	case rep := <-ch:
		if rep.err != nil {
			return nil, fmt.Errorf("dial %s: %w", what, rep.err)
		}
		defer rep.f.Close()
		c, err := net.FileConn(rep.f)
		if err != nil {
			return nil, fmt.Errorf("dial %s: use the helper's socket: %w", what, err)
		}
		return c, nil
	}
}
