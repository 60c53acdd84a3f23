package gossip

import (
	"sync"
	"sync/atomic"
)

// eventBuffer is the capacity of Events. Membership changes come in bursts
// (a partition heals: one Join per machine on the other side), so it holds a
// few bursts of a 200-machine mesh.
const eventBuffer = 512

// eventQueue feeds Events without ever blocking memberlist, whose callbacks
// run under its node lock: when the channel is full the oldest event is
// dropped (and counted). A reader that falls behind loses history, not the
// present, and Members always has the current truth.
type eventQueue struct {
	mu      sync.Mutex
	ch      chan Event
	closed  bool
	dropped *atomic.Uint64
}

func newEventQueue(dropped *atomic.Uint64) *eventQueue {
	return &eventQueue{ch: make(chan Event, eventBuffer), dropped: dropped}
}

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	for {
		select {
		case q.ch <- e:
			return
		default:
		}
		// Full: drop the oldest. The reader may have emptied the channel
		// meanwhile, in which case there is nothing to drop and the next
		// send succeeds. Only push sends, under mu, so this terminates.
		select {
		case <-q.ch:
			q.dropped.Add(1)
		default:
		}
	}
}

// close ends the stream; later pushes are ignored.
func (q *eventQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
}
