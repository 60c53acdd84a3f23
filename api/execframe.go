package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The exec stream's framing. After the HTTP upgrade (execupgrade.go) both
// sides of an exec talk in frames: one kind byte, a 4-byte big-endian
// length, then at most maxFramePayload bytes. Input, window sizes and the
// end of input go towards the command; its output, its exit code or an
// error come back. Each side pings the other while the stream is open, and
// takes the other for gone after a silence (ExecTiming.Idle), so a machine
// or a CLI that vanishes without closing its connection ends the exec
// instead of leaving it running.

// Frame kinds. Input and output reuse the file descriptor numbers.
const (
	FrameStdin    byte = 0 // bytes for the command's standard input
	FrameStdout   byte = 1 // bytes of its standard output (all output with a TTY)
	FrameStderr   byte = 2 // bytes of its standard error
	FrameStdinEOF byte = 3 // no more input
	FrameResize   byte = 4 // the terminal's size: columns, rows (uint16 each)
	FrameExit     byte = 5 // the exit code (int32); the last frame
	FrameError    byte = 6 // why the exec failed (text); the last frame
	FramePing     byte = 7 // nothing but "still here"
)

// maxFramePayload bounds one frame; a longer one is a protocol error, so a
// peer cannot make the other side allocate more than this.
const maxFramePayload = 32 << 10

const frameHeader = 5

// ExecTiming is how each side of an exec stream keeps it alive.
type ExecTiming struct {
	// Ping is how often a side says it is still there; default 10 s.
	Ping time.Duration
	// Idle is how long a side waits without hearing anything before it
	// ends the stream; default 45 s. A side that is blocked handing on
	// what it got (a paused terminal, a command that does not read its
	// input) is not counted as silent.
	Idle time.Duration
}

func (t ExecTiming) withDefaults() ExecTiming {
	if t.Ping <= 0 {
		t.Ping = 10 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 45 * time.Second
	}
	return t
}

// errStopReading ends a read loop without an error.
var errStopReading = errors.New("stop reading")

// frameConn reads and writes frames on one connection.
type frameConn struct {
	r      io.Reader
	w      io.Writer
	c      io.Closer
	timing ExecTiming

	wmu  sync.Mutex
	wbuf []byte
	rbuf []byte

	lastRead atomic.Int64 // unix nanoseconds of the last frame read
	holding  atomic.Bool  // the reader is handing a frame on
	closed   chan struct{}
	once     sync.Once
	timedOut atomic.Bool
}

func newFrameConn(r io.Reader, w io.Writer, c io.Closer, t ExecTiming) *frameConn {
	f := &frameConn{r: r, w: w, c: c, timing: t.withDefaults(), closed: make(chan struct{}),
		wbuf: make([]byte, frameHeader+maxFramePayload), rbuf: make([]byte, maxFramePayload)}
	f.lastRead.Store(time.Now().UnixNano())
	return f
}

// Close closes the connection; reads and writes in progress fail.
func (f *frameConn) Close() error {
	var err error
	f.once.Do(func() {
		close(f.closed)
		err = f.c.Close()
	})
	return err
}

// closeWrite says "no more frames" while still reading what the other
// side sends until it closes; connections that cannot half-close (an
// upgraded HTTP client body) are left open for the caller to close.
func (f *frameConn) closeWrite() {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if cw, ok := f.w.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// write sends one frame; p must fit in one.
func (f *frameConn) write(kind byte, p []byte) error {
	if len(p) > maxFramePayload {
		return fmt.Errorf("frame of %d bytes is over the %d-byte limit", len(p), maxFramePayload)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.writeLocked(kind, p)
}

func (f *frameConn) writeLocked(kind byte, p []byte) error {
	b := f.wbuf[:frameHeader+len(p)]
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:frameHeader], uint32(len(p)))
	copy(b[frameHeader:], p)
	_, err := f.w.Write(b)
	return err
}

// writeData sends p in as many frames as it takes.
func (f *frameConn) writeData(kind byte, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), maxFramePayload)
		if err := f.write(kind, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// readLoop hands each frame to handle until the connection ends or handle
// returns an error (errStopReading: a normal end, returned as nil). The
// payload is valid only during the call.
func (f *frameConn) readLoop(handle func(kind byte, p []byte) error) error {
	var h [frameHeader]byte
	for {
		if _, err := io.ReadFull(f.r, h[:]); err != nil {
			return f.readErr(err)
		}
		n := binary.BigEndian.Uint32(h[1:])
		if n > maxFramePayload {
			return fmt.Errorf("exec stream: a frame of %d bytes is over the %d-byte limit", n, maxFramePayload)
		}
		p := f.rbuf[:n]
		if _, err := io.ReadFull(f.r, p); err != nil {
			return f.readErr(err)
		}
		f.lastRead.Store(time.Now().UnixNano())
		f.holding.Store(true)
		err := handle(h[0], p)
		f.holding.Store(false)
		f.lastRead.Store(time.Now().UnixNano())
		if errors.Is(err, errStopReading) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (f *frameConn) readErr(err error) error {
	if f.timedOut.Load() {
		return fmt.Errorf("exec stream: nothing heard from the other side for %v", f.timing.Idle)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("exec stream cut in the middle of a frame: %w", err)
	}
	return err
}

// keepalive pings the other side every Ping and closes the connection
// when nothing was heard from it for Idle; stop ends it.
func (f *frameConn) keepalive() (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		tick := time.NewTicker(f.timing.Ping)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-f.closed:
				return
			case <-tick.C:
			}
			silent := time.Since(time.Unix(0, f.lastRead.Load()))
			if !f.holding.Load() && silent > f.timing.Idle {
				f.timedOut.Store(true)
				f.Close()
				return
			}
			// A write in progress already tells the other side we are
			// here, or it is stuck because the other side does not read:
			// either way a ping must not queue behind it.
			if f.wmu.TryLock() {
				err := f.writeLocked(FramePing, nil)
				f.wmu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// resizePayload encodes a terminal size.
func resizePayload(cols, rows uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:2], cols)
	binary.BigEndian.PutUint16(b[2:4], rows)
	return b[:]
}

func parseResize(p []byte) (cols, rows uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("exec stream: a resize frame has %d bytes, not 4", len(p))
	}
	return binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4]), nil
}

func exitPayload(code int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	return b[:]
}

func parseExit(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("exec stream: an exit frame has %d bytes, not 4", len(p))
	}
	return int(int32(binary.BigEndian.Uint32(p))), nil
}
