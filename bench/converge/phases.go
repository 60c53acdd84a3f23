package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

// latencies writes one record at a time, rotating the writer, and waits
// until every replica's Watch has reported it: one sample per write, sorted.
func latencies(ctx context.Context, log *slog.Logger, n, writes int) ([]time.Duration, error) {
	c, err := newCluster(ctx, log, n)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return timeWrites(ctx, c, writes)
}

// percentiles are the p50 and p99 of sorted samples.
func percentiles(lats []time.Duration) (p50, p99 time.Duration) {
	return lats[len(lats)/2], lats[(len(lats)*99)/100]
}

// timeWrites is latencies' measurement on a formed cluster.
func timeWrites(ctx context.Context, c *cluster, writes int) ([]time.Duration, error) {
	n := len(c.reps)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	last := map[string]time.Time{}
	cond := sync.NewCond(&mu)
	for _, r := range c.reps {
		ch, err := r.store.Load().Watch(ctx, "/services/")
		if err != nil {
			return nil, err
		}
		go func() {
			for ev := range ch {
				if ev.Type != crdt.Updated {
					continue
				}
				now := time.Now()
				mu.Lock()
				seen[ev.Key]++
				last[ev.Key] = now
				cond.Broadcast()
				mu.Unlock()
			}
		}()
	}
	var lats []time.Duration
	for i := range writes {
		w := c.reps[i%n].store.Load()
		rec := &record.Service{Name: "lat-" + strconv.Itoa(i), Mode: "replicated"}
		start := time.Now()
		if err := w.Put(ctx, rec.Key(), rec); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(5 * time.Second)
		mu.Lock()
		for seen[rec.Key()] < n && time.Now().Before(deadline) {
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
		}
		ok := seen[rec.Key()] >= n
		lat := last[rec.Key()].Sub(start)
		mu.Unlock()
		if !ok {
			lat = 5 * time.Second // counted as a 5 s outlier
		}
		lats = append(lats, lat)
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(lats)
	return lats, nil
}

// partitionHeal writes healN records on each side of a 2|3 cut, heals, and
// times convergence.
func partitionHeal(ctx context.Context, log *slog.Logger, healN int) (time.Duration, error) {
	c, err := newCluster(ctx, log, 5)
	if err != nil {
		return 0, err
	}
	defer c.close()
	c.split = 2
	c.cut.Store(true)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, w := range []*replica{c.reps[0], c.reps[2]} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := w.store.Load()
			for i := range healN {
				r := &record.Container{MachineID: w.name, ID: fmt.Sprintf("c%05d", i), Name: "x"}
				if err := s.Put(ctx, r.Key(), r); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	// Let each side settle so the figure is the heal, not the writes.
	time.Sleep(2 * time.Second)
	start := time.Now()
	c.cut.Store(false)
	// On a real heal gossip's rejoin timer joins known machines, which is
	// a push/pull (anti-entropy) across the former cut: do exactly that.
	c.reps[0].node.Join(ctx, []string{c.reps[2].node.Addr().String()})
	if _, err := c.waitEqual(ctx, 60*time.Second); err != nil {
		return 0, err
	}
	took := time.Since(start)
	for _, r := range c.reps {
		l, _ := r.store.Load().List(ctx, "/containers/")
		if len(l) != 2*healN {
			return 0, fmt.Errorf("%s has %d of %d containers after heal", r.name, len(l), 2*healN)
		}
	}
	return took, nil
}

// catchUp closes one store, writes n records elsewhere, reopens it and
// times until it matches.
func catchUp(ctx context.Context, log *slog.Logger, n int) (time.Duration, error) {
	c, err := newCluster(ctx, log, 5)
	if err != nil {
		return 0, err
	}
	defer c.close()
	away := c.reps[4]
	if err := away.store.Swap(nil).Close(); err != nil {
		return 0, err
	}
	w := c.reps[0].store.Load()
	for i := range n {
		r := &record.Container{MachineID: c.reps[0].name, ID: fmt.Sprintf("c%05d", i), Name: "x"}
		if err := w.Put(ctx, r.Key(), r); err != nil {
			return 0, err
		}
	}
	if _, err := c.waitEqual(ctx, 60*time.Second); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.open(ctx, away); err != nil {
		return 0, err
	}
	if _, err := c.waitEqual(ctx, 60*time.Second); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func writeRate(ctx context.Context, log *slog.Logger, n int) (float64, error) {
	c, err := newCluster(ctx, log, 5)
	if err != nil {
		return 0, err
	}
	defer c.close()
	w := c.reps[0].store.Load()
	start := time.Now()
	for i := range n {
		r := &record.Container{MachineID: c.reps[0].name, ID: fmt.Sprintf("c%05d", i), Name: "x"}
		if err := w.Put(ctx, r.Key(), r); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// measureRSS runs in the child: one store alone, 10,000 records, RSS; then
// churn and the store's size.
func measureRSS(ctx context.Context, dir string, log *slog.Logger) error {
	s, err := crdt.Open(ctx, crdt.Config{Dir: dir, Name: "solo", Log: log})
	if err != nil {
		return err
	}
	defer s.Close()
	const n = 10_000
	for i := range n {
		r := &record.Container{MachineID: "m1", ID: fmt.Sprintf("c%05d", i), Name: "web", Service: "web", Image: "nginx:1.27", Address: meshaddr.Subnet(1).ContainerAddr(2).String()}
		if err := s.Put(ctx, r.Key(), r); err != nil {
			return err
		}
	}
	if l, err := s.List(ctx, "/containers/"); err != nil || len(l) != n {
		return fmt.Errorf("list: %d records, %v", len(l), err)
	}
	runtime.GC()
	if p := os.Getenv("CONVERGE_HEAPPROF"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(os.Stderr, "heap inuse %.1f MB, heap sys %.1f MB, go sys %.1f MB, stacks %.1f MB\n", float64(ms.HeapInuse)/1e6, float64(ms.HeapSys)/1e6, float64(ms.Sys)/1e6, float64(ms.StackSys)/1e6)
	fmt.Printf("rss_mb %.1f\n", vmRSS())
	// What an idle agent settles at: the scavenger returns freed pages.
	debug.FreeOSMemory()
	fmt.Printf("rss_settled_mb %.1f\n", vmRSS())
	for i := range n {
		if err := s.Delete(ctx, fmt.Sprintf("/containers/m1/c%05d", i)); err != nil {
			return err
		}
	}
	sz, err := s.Size(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("churn %.1f MB, %d DAG blocks, %d live keys (10,000 created + deleted)\n", float64(sz.DiskBytes)/1e6, sz.Blocks, sz.Keys)
	return nil
}

func vmRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return -1
}
