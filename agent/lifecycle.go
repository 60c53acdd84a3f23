package agent

import (
	"errors"
	"sync"
)

// lifecycle is the daemon's shutdown order, stated once:
//
//  1. stop accepting: the listeners close, so no new call starts work;
//  2. cancel the daemon's context, which every goroutine watches;
//  3. wait for those goroutines, so nothing uses a part after step 4;
//  4. close the parts newest first: the runtime, the store, gossip, and
//     last the device they all send through.
//
// Each start function registers what it opened, in the step it belongs
// to, as soon as it has opened it, so a failed start closes exactly what
// was opened. Close may be called any number of times.
type lifecycle struct {
	mu        sync.Mutex
	listeners []func() error // step 1, in any order
	parts     []func() error // step 4, newest first

	once sync.Once
	err  error
}

// stopAccepting registers a listener to close first.
func (l *lifecycle) stopAccepting(close func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.listeners = append(l.listeners, close)
}

// closeLast registers a part to close after every goroutine has returned.
func (l *lifecycle) closeLast(close func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.parts = append(l.parts, close)
}

// shutdown runs the four steps once; later calls return the first
// call's error.
func (l *lifecycle) shutdown(cancel func(), wait func()) error {
	l.once.Do(func() {
		l.mu.Lock()
		listeners, parts := l.listeners, l.parts
		l.listeners, l.parts = nil, nil
		l.mu.Unlock()
		var errs []error
		for _, c := range listeners {
			errs = append(errs, c())
		}
		cancel()
		wait()
		for i := len(parts) - 1; i >= 0; i-- {
			errs = append(errs, parts[i]())
		}
		l.err = errors.Join(errs...)
	})
	return l.err
}
