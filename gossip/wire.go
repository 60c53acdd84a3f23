package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format of a user message (inside memberlist's encrypted userMsg):
//
//	version  1 byte  (wireVersion)
//	kind     1 byte  (kindBroadcast | kindDirect)
//	origin   1-byte length + bytes (1..255)   the machine that created it
//	epoch    8 bytes big endian               origin's boot time, UnixNano
//	seq      8 bytes big endian (≥ 1)         per-boot sequence number
//	topic    1-byte length + bytes (1..32)
//	key      1-byte length + bytes (0..255; empty for direct messages)
//	length   4 bytes big endian               payload length
//	payload  exactly length bytes
//
// (origin, epoch, seq) identifies a message for deduplication and replay
// rejection. Fixed-width integers keep the encoding canonical: a message
// decodes only if re-encoding gives the same bytes, which the fuzz test
// checks. The explicit payload length makes truncation detectable.
//
// The anti-entropy state carried by push/pull has its own layout:
//
//	version 1 byte, kind 1 byte (kindState), origin as above,
//	count   2 bytes big endian (0..maxStateTopics)
//	count × { topic as above, length 4 bytes, bytes }
//
// with topics unique and the buffer consumed exactly.

const (
	wireVersion byte = 1

	kindBroadcast byte = 1
	kindDirect    byte = 2
	kindState     byte = 3

	maxStateTopics = 256
)

// message is a decoded user message. payload aliases the decoded buffer.
type message struct {
	kind    byte
	origin  string
	epoch   uint64
	seq     uint64
	topic   string
	key     string
	payload []byte
}

// topicState is one topic's share of a push/pull.
type topicState struct {
	topic string
	data  []byte
}

// errMalformed wraps every decoding failure.
var errMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// leftTopic is internal: a machine announces its Leave on it, because
// memberlist's leave callback cannot tell a machine that left from one that
// died. Topics starting with '_' are reserved for this package.
const leftTopic = "_left"

// userTopic reports whether an API caller may use t.
func userTopic(t string) error {
	if err := validTopic(t); err != nil {
		return err
	}
	if t[0] == '_' {
		return fmt.Errorf("topic %q: topics starting with '_' are reserved", t)
	}
	return nil
}

// validTopic reports whether t may name a topic on the wire.
func validTopic(t string) error {
	if len(t) == 0 || len(t) > MaxTopicLen {
		return fmt.Errorf("topic %q: length must be 1..%d", t, MaxTopicLen)
	}
	return nil
}

func encodedLen(m *message) int {
	return 2 + 1 + len(m.origin) + 8 + 8 + 1 + len(m.topic) + 1 + len(m.key) + 4 + len(m.payload)
}

// encodeMessage encodes m; the caller has validated the field lengths.
func encodeMessage(m *message) []byte {
	b := make([]byte, 0, encodedLen(m))
	b = append(b, wireVersion, m.kind)
	b = appendString(b, m.origin)
	b = binary.BigEndian.AppendUint64(b, m.epoch)
	b = binary.BigEndian.AppendUint64(b, m.seq)
	b = appendString(b, m.topic)
	b = appendString(b, m.key)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.payload)))
	return append(b, m.payload...)
}

// decodeMessage parses b. It never panics; every error wraps errMalformed.
func decodeMessage(b []byte) (message, error) {
	var m message
	r := reader{b: b}
	if v := r.byte(); v != wireVersion {
		if r.err != nil {
			return m, r.err
		}
		return m, malformed("version %d, want %d", v, wireVersion)
	}
	m.kind = r.byte()
	m.origin = r.string()
	m.epoch = r.uint64()
	m.seq = r.uint64()
	m.topic = r.string()
	m.key = r.string()
	n := r.uint32()
	if r.err != nil {
		return m, r.err
	}
	switch {
	case m.kind != kindBroadcast && m.kind != kindDirect:
		return m, malformed("kind %d", m.kind)
	case m.origin == "":
		return m, malformed("empty origin")
	case m.seq == 0:
		return m, malformed("sequence 0")
	case validTopic(m.topic) != nil:
		return m, malformed("%v", validTopic(m.topic))
	case m.kind == kindDirect && m.key != "":
		return m, malformed("direct message with key %q", m.key)
	case uint64(n) != uint64(len(r.b)):
		return m, malformed("payload length %d, %d bytes left (truncated or padded)", n, len(r.b))
	case n > MaxPayload:
		return m, malformed("payload length %d over limit %d", n, MaxPayload)
	}
	m.payload = r.b
	return m, nil
}

// encodeState encodes origin's per-topic states.
func encodeState(origin string, states []topicState) []byte {
	size := 2 + 1 + len(origin) + 2
	for _, s := range states {
		size += 1 + len(s.topic) + 4 + len(s.data)
	}
	b := make([]byte, 0, size)
	b = append(b, wireVersion, kindState)
	b = appendString(b, origin)
	b = binary.BigEndian.AppendUint16(b, uint16(len(states)))
	for _, s := range states {
		b = appendString(b, s.topic)
		b = binary.BigEndian.AppendUint32(b, uint32(len(s.data)))
		b = append(b, s.data...)
	}
	return b
}

// decodeState parses a push/pull state. It never panics; every error
// wraps errMalformed. The data slices alias b.
func decodeState(b []byte) (string, []topicState, error) {
	r := reader{b: b}
	v, k := r.byte(), r.byte()
	origin := r.string()
	count := r.uint16()
	if r.err != nil {
		return "", nil, r.err
	}
	switch {
	case v != wireVersion:
		return "", nil, malformed("version %d, want %d", v, wireVersion)
	case k != kindState:
		return "", nil, malformed("kind %d, want state", k)
	case origin == "":
		return "", nil, malformed("empty origin")
	case count > maxStateTopics:
		return "", nil, malformed("%d topics, limit %d", count, maxStateTopics)
	}
	states := make([]topicState, 0, count)
	seen := make(map[string]bool, count)
	for i := 0; i < int(count); i++ {
		topic := r.string()
		n := r.uint32()
		data := r.bytes(int(n))
		if r.err != nil {
			return "", nil, r.err
		}
		if err := validTopic(topic); err != nil {
			return "", nil, malformed("state %d: %v", i, err)
		}
		if seen[topic] {
			return "", nil, malformed("state %d: duplicate topic %q", i, topic)
		}
		seen[topic] = true
		states = append(states, topicState{topic: topic, data: data})
	}
	if len(r.b) != 0 {
		return "", nil, malformed("%d trailing bytes after state", len(r.b))
	}
	return origin, states, nil
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// reader consumes a buffer front to back; the first short read sets err
// and every later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = malformed("truncated: need %d bytes, have %d", n, len(r.b))
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) uint16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) string() string {
	n := int(r.byte())
	return string(r.take(n))
}

func (r *reader) bytes(n int) []byte {
	return r.take(n)
}
