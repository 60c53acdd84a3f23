package gossip

import (
	"context"
	"sync"

	"github.com/hashicorp/memberlist"
)

const (
	// fanoutWorkers stream large broadcasts to members in parallel, so one
	// member that is down (a dial that runs to its timeout) does not hold
	// up delivery to the others.
	fanoutWorkers = 4
	// fanoutQueue bounds pending stream deliveries: Broadcast never blocks
	// (it runs inside the store's Put); when full, deliveries are dropped
	// and counted, and anti-entropy carries the state instead.
	fanoutQueue = 1024
)

type fanoutJob struct {
	to  memberlist.Node
	msg []byte
}

// fanout streams messages too large for a packet to members, off the
// caller's goroutine.
type fanout struct {
	jobs chan fanoutJob
	send func(to *memberlist.Node, msg []byte) // SendReliable; errors are counted by send
}

func newFanout(send func(*memberlist.Node, []byte)) *fanout {
	return &fanout{jobs: make(chan fanoutJob, fanoutQueue), send: send}
}

// start runs the workers until ctx is done; wg tracks them.
func (f *fanout) start(ctx context.Context, wg *sync.WaitGroup) {
	for range fanoutWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-f.jobs:
					f.send(&j.to, j.msg)
				}
			}
		}()
	}
}

// enqueue reports false when the queue is full.
func (f *fanout) enqueue(j fanoutJob) bool {
	select {
	case f.jobs <- j:
		return true
	default:
		return false
	}
}
