package gossip

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleMessage() message {
	return message{kind: kindBroadcast, origin: "m01", epoch: 1700000000000000000, seq: 7, topic: "crdt", key: "heads", payload: []byte("payload")}
}

func TestMessageRoundTrip(t *testing.T) {
	tests := []message{
		sampleMessage(),
		{kind: kindDirect, origin: "x", epoch: 0, seq: 1, topic: "t", payload: nil},
		{kind: kindBroadcast, origin: strings.Repeat("o", 255), epoch: ^uint64(0), seq: ^uint64(0), topic: strings.Repeat("t", MaxTopicLen), key: strings.Repeat("k", MaxKeyLen), payload: bytes.Repeat([]byte{0xff}, 3000)},
	}
	for _, m := range tests {
		raw := encodeMessage(&m)
		if len(raw) != encodedLen(&m) {
			t.Errorf("encodedLen = %d, encoded %d bytes", encodedLen(&m), len(raw))
		}
		got, err := decodeMessage(raw)
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", m, err)
		}
		if got.kind != m.kind || got.origin != m.origin || got.epoch != m.epoch || got.seq != m.seq ||
			got.topic != m.topic || got.key != m.key || !bytes.Equal(got.payload, m.payload) {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	good := sampleMessage()
	valid := encodeMessage(&good)
	mutate := func(f func(m *message)) []byte {
		m := sampleMessage()
		f(&m)
		return encodeMessage(&m)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"one byte", []byte{wireVersion}},
		{"wrong version", append([]byte{9}, valid[1:]...)},
		{"unknown kind", mutate(func(m *message) { m.kind = 9 })},
		{"state kind", mutate(func(m *message) { m.kind = kindState })},
		{"empty origin", mutate(func(m *message) { m.origin = "" })},
		{"seq zero", mutate(func(m *message) { m.seq = 0 })},
		{"empty topic", mutate(func(m *message) { m.topic = "" })},
		{"long topic", mutate(func(m *message) { m.topic = strings.Repeat("t", MaxTopicLen+1) })},
		{"direct with key", mutate(func(m *message) { m.kind = kindDirect })},
		{"trailing byte", append(bytes.Clone(valid), 0)},
		{"garbage", []byte("\x01\x01\xffnot really a message at all")},
	}
	for i := 1; i < len(valid); i++ {
		tests = append(tests, struct {
			name string
			in   []byte
		}{"truncated", valid[:i]})
	}
	for _, tt := range tests {
		if _, err := decodeMessage(tt.in); !errors.Is(err, errMalformed) {
			t.Errorf("%s (%d bytes): err = %v, want errMalformed", tt.name, len(tt.in), err)
		}
	}
}

func TestStateRoundTripAndRejects(t *testing.T) {
	states := []topicState{{"a", []byte("1")}, {"crdt", nil}, {"z", bytes.Repeat([]byte{1}, 100)}}
	raw := encodeState("m01", states)
	origin, got, err := decodeState(raw)
	if err != nil || origin != "m01" || len(got) != len(states) {
		t.Fatalf("decodeState = %q, %d states, %v", origin, len(got), err)
	}
	for i := range states {
		if got[i].topic != states[i].topic || !bytes.Equal(got[i].data, states[i].data) {
			t.Errorf("state %d = %+v, want %+v", i, got[i], states[i])
		}
	}
	bad := [][]byte{
		nil,
		append(bytes.Clone(raw), 0),
		encodeState("", states),
		encodeState("m", []topicState{{"a", nil}, {"a", nil}}),
		encodeState("m", []topicState{{"", nil}}),
	}
	for i := 1; i < len(raw); i++ {
		bad = append(bad, raw[:i])
	}
	for _, b := range bad {
		if _, _, err := decodeState(b); !errors.Is(err, errMalformed) {
			t.Errorf("decodeState(%q) err = %v, want errMalformed", b, err)
		}
	}
}

func TestMaxPacketMsg(t *testing.T) {
	// The budget: gossip piggyback is the tighter of the two paths.
	if maxPacketMsg != 1089 {
		t.Errorf("maxPacketMsg = %d, want 1089 (1123 buffer − 2 − 29 − 2 − 1)", maxPacketMsg)
	}
	if direct := MaxWirePacket - encryptOverhead - crcOverhead - userMsgTypeSize; maxPacketMsg > direct {
		t.Errorf("maxPacketMsg %d exceeds the direct-packet limit %d", maxPacketMsg, direct)
	}
}

func TestReplayFilter(t *testing.T) {
	now := time.Now()
	type step struct {
		origin     string
		epoch, seq uint64
		want       bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first and duplicate", []step{{"a", 1, 1, true}, {"a", 1, 1, false}}},
		{"out of order within window", []step{{"a", 1, 5, true}, {"a", 1, 3, true}, {"a", 1, 4, true}, {"a", 1, 3, false}, {"a", 1, 5, false}}},
		{"below the window", []step{{"a", 1, 2000, true}, {"a", 1, 2000 - replayWindow, false}, {"a", 1, 2000 - replayWindow + 1, true}}},
		{"window slides and reuses slots", []step{{"a", 1, 1, true}, {"a", 1, 1 + replayWindow, true}, {"a", 1, 1 + 2*replayWindow, true}, {"a", 1, 1 + replayWindow, false}, {"a", 1, 2 + replayWindow, true}}},
		{"older boot rejected", []step{{"a", 2, 1, true}, {"a", 1, 99, false}}},
		{"newer boot resets", []step{{"a", 1, 50, true}, {"a", 2, 1, true}, {"a", 2, 1, false}, {"a", 1, 51, false}}},
		{"origins are separate", []step{{"a", 1, 1, true}, {"b", 1, 1, true}}},
		{"rejoin lets one older boot in", []step{{"a", 5, 9, true}, {"rejoined", 0, 0, true}, {"a", 5, 9, false}, {"a", 3, 1, true}, {"a", 5, 10, false}, {"a", 3, 1, false}}},
		{"rejoin withdrawn by a newer seq", []step{{"a", 5, 9, true}, {"rejoined", 0, 0, true}, {"a", 5, 10, true}, {"a", 3, 1, false}}},
		{"big jump clears", []step{{"a", 1, 1, true}, {"a", 1, 10 * replayWindow, true}, {"a", 1, 10*replayWindow - 1, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newReplayFilter()
			for i, s := range tt.steps {
				if s.origin == "rejoined" {
					f.rejoined("a")
					continue
				}
				if got := f.accept(s.origin, s.epoch, s.seq, now); got != s.want {
					t.Errorf("step %d accept(%s, %d, %d) = %v, want %v", i, s.origin, s.epoch, s.seq, got, s.want)
				}
			}
		})
	}
}

func TestReplayFilterBounded(t *testing.T) {
	f := newReplayFilter()
	now := time.Now()
	for i := range maxReplayOrigins + 100 {
		f.accept("o"+strconv.Itoa(i), 1, 1, now.Add(time.Duration(i)))
	}
	if len(f.origins) > maxReplayOrigins {
		t.Fatalf("%d origins tracked, cap %d", len(f.origins), maxReplayOrigins)
	}
}

// FuzzDecodeMessage: the decoder never panics, and whatever it accepts is
// the canonical encoding of what it returned.
func FuzzDecodeMessage(f *testing.F) {
	m := sampleMessage()
	f.Add(encodeMessage(&m))
	d := message{kind: kindDirect, origin: "a", epoch: 1, seq: 1, topic: "t"}
	f.Add(encodeMessage(&d))
	f.Add([]byte{})
	f.Add([]byte{wireVersion, kindBroadcast, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if again := encodeMessage(&got); !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical input:\n in  %x\n out %x", b, again)
		}
	})
}

// FuzzDecodeState: same property for push/pull states.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState("m01", []topicState{{"crdt", []byte("heads")}, {"nat", nil}}))
	f.Add(encodeState("m", nil))
	f.Add([]byte{wireVersion, kindState})
	f.Fuzz(func(t *testing.T, b []byte) {
		origin, states, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if again := encodeState(origin, states); !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical input:\n in  %x\n out %x", b, again)
		}
	})
}
